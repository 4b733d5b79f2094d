package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
)

// Environment variables and defaults of the global flags.
const (
	EnvURL     = "AVATARFLEET_URL"
	EnvAPIKey  = "AVATARFLEET_API_KEY"
	DefaultURL = "http://127.0.0.1:8080"
)

// Options are everything a command tree takes from its surroundings.
type Options struct {
	// Stdout receives results (tables, JSON, progress); nil discards them.
	Stdout io.Writer
	// Stderr receives errors and warnings; nil discards them.
	Stderr io.Writer
	// Getenv reads an environment variable (os.Getenv in main); nil reads
	// nothing.
	Getenv func(string) string
	// HTTPClient sends the API requests; nil means a fresh http.Client.
	HTTPClient *http.Client
}

// app is the state of one command tree: its options and global flags.
type app struct {
	opts   Options
	url    string
	apiKey string
	output outputFormat
	root   *cobra.Command
}

// NewRootCommand returns the avatarctl command tree. Its arguments start
// empty (SetArgs sets them; os.Args is never read). On failure the command
// prints "error: <message>" to Options.Stderr and ExecuteContext returns
// the error; ExitCode maps it to the exit code.
func NewRootCommand(opts Options) *cobra.Command {
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	if opts.Getenv == nil {
		opts.Getenv = func(string) string { return "" }
	}
	a := &app{opts: opts, output: outputTable}
	root := &cobra.Command{
		Use:   "avatarctl",
		Short: "Administer an AvatarFleet control plane",
		Long: "avatarctl administers an AvatarFleet control plane over its REST API.\n\n" +
			"The control plane's URL comes from --url, else $" + EnvURL + ", else " + DefaultURL + ";\n" +
			"the API key from --api-key, else $" + EnvAPIKey + ".",
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	a.root = root
	root.SetOut(opts.Stdout)
	root.SetErr(opts.Stderr)
	root.SetIn(strings.NewReader(""))
	root.SetArgs([]string{})
	root.SetErrPrefix("error:")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef(cmd, "%v", err)
	})

	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", DefaultURL, "control plane URL (env "+EnvURL+")")
	pf.StringVar(&a.apiKey, "api-key", "", "API key (env "+EnvAPIKey+")")
	pf.VarP(&a.output, "output", "o", `output format: "table" or "json"`)

	root.AddCommand(newWorkersCommand(a), newSessionsCommand(a), newAvatarsCommand(a), newVoicesCommand(a), newCertsCommand(a))
	return root
}

// Run executes one avatarctl command line (args without the program name)
// and returns its exit code. Errors are printed to opts.Stderr.
func Run(ctx context.Context, opts Options, args []string) int {
	cmd := NewRootCommand(opts)
	if args == nil {
		args = []string{}
	}
	cmd.SetArgs(args)
	return ExitCode(cmd.ExecuteContext(ctx))
}

// client returns an API client for the global flags: a flag set on the
// command line wins over the environment, which wins over the default.
func (a *app) client(cmd *cobra.Command) (*apiclient.Client, error) {
	url := a.url
	if !a.root.PersistentFlags().Changed("url") {
		if v := a.opts.Getenv(EnvURL); v != "" {
			url = v
		}
	}
	key := a.apiKey
	if !a.root.PersistentFlags().Changed("api-key") {
		key = a.opts.Getenv(EnvAPIKey)
	}
	c, err := apiclient.New(apiclient.Options{BaseURL: url, APIKey: key, HTTPClient: a.opts.HTTPClient})
	if err != nil {
		return nil, usagef(cmd, "bad control plane URL: %v", err)
	}
	return c, nil
}

// newGroupCommand returns a command that only holds subcommands: alone it
// prints its help, with an unknown subcommand it is a usage error (cobra
// would print the help and succeed).
func newGroupCommand(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef(cmd, "unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
}

// exactArgs requires one positional argument per name, none empty.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			want := "no arguments"
			if len(names) > 0 {
				want = fmt.Sprintf("%d argument(s) (%s)", len(names), strings.Join(names, " "))
			}
			return usagef(cmd, "%q takes %s, got %d", cmd.CommandPath(), want, len(args))
		}
		for i, arg := range args {
			if strings.TrimSpace(arg) == "" {
				return usagef(cmd, "%s must not be empty", names[i])
			}
		}
		return nil
	}
}
