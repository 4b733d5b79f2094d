package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/proto/livekitroom"
)

// newSessionsCommand returns "sessions" and its verbs.
func newSessionsCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("sessions", "List, inspect, create and delete sessions")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "list",
			Short: "List sessions",
			Args:  exactArgs(),
			RunE:  withErrors(a.sessionsList),
		},
		&cobra.Command{
			Use:   "get ID",
			Short: "Show one session",
			Args:  exactArgs("ID"),
			RunE:  withErrors(a.sessionsGet),
		},
		newCreateCommand(a),
		&cobra.Command{
			Use:   "delete ID",
			Short: "End a session (its slot is freed)",
			Args:  exactArgs("ID"),
			RunE:  withErrors(a.sessionsDelete),
		},
	)
	return cmd
}

func (a *app) sessionsList(ctx context.Context, cmd *cobra.Command, _ []string) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	sessions, err := c.ListSessions(ctx)
	if err != nil {
		return err
	}
	if a.output == outputJSON {
		return writeJSON(a.opts.Stdout, apiv1.SessionList{Sessions: sessions})
	}
	return renderSessions(a.opts.Stdout, sessions)
}

func (a *app) sessionsGet(ctx context.Context, cmd *cobra.Command, args []string) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	s, err := c.GetSession(ctx, args[0])
	if err != nil {
		return err
	}
	return a.printSession(*s)
}

func (a *app) sessionsDelete(ctx context.Context, cmd *cobra.Command, args []string) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	if err := c.DeleteSession(ctx, args[0]); err != nil {
		return err
	}
	if a.output == outputJSON {
		return nil // the API answers 204: there is no JSON to print
	}
	return a.printf("session %s: deleted\n", args[0])
}

// printSession prints one session in the chosen format.
func (a *app) printSession(s apiv1.Session) error {
	if a.output == outputJSON {
		return writeJSON(a.opts.Stdout, s)
	}
	return renderSession(a.opts.Stdout, s)
}

// createFlags are the flags of "sessions create".
type createFlags struct {
	avatar, voice  string
	labels         []string
	idleTimeout    time.Duration
	maxDuration    time.Duration
	idempotencyKey string
	restartPolicy  string
	replaceTimeout time.Duration
	livekitURL     string
	livekitToken   string // a file holding the token
}

// newCreateCommand returns "sessions create".
func newCreateCommand(a *app) *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a session on a free GPU slot",
		Long: "create asks the control plane for a new session and prints it, with the WHEP URL\n" +
			"and viewer token a browser needs to watch it. With no free slot it fails with\n" +
			"no_capacity and the time after which to retry.",
		Args: exactArgs(),
	}
	cmd.RunE = withErrors(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
		req, err := f.request(cmd)
		if err != nil {
			return err
		}
		c, err := a.client(cmd)
		if err != nil {
			return err
		}
		s, err := c.CreateSession(ctx, req, f.idempotencyKey)
		if err != nil {
			return err
		}
		return a.printSession(*s)
	})
	fl := cmd.Flags()
	fl.StringVar(&f.avatar, "avatar", "", "avatar name (default: the control plane's default avatar)")
	fl.StringVar(&f.voice, "voice", "", "voice name (default: the avatar's voice)")
	fl.StringArrayVar(&f.labels, "label", nil, "label key=value (repeatable)")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", 0, "end the session after this long with no viewer and no speech, whole seconds (server default 2m)")
	fl.DurationVar(&f.maxDuration, "max-duration", 0, "end the session after this long, whole seconds (server default 4h)")
	fl.StringVar(&f.restartPolicy, "restart-policy", "", "on_worker_lost (re-place the session when its worker is lost; server default) or never")
	fl.DurationVar(&f.replaceTimeout, "replace-timeout", 0, "how long a lost session waits for a new slot before it fails, whole seconds (server default 1m)")
	fl.StringVar(&f.livekitURL, "livekit-url", "", "join this LiveKit server's room as a voice agent's avatar (with --livekit-token-file)")
	fl.StringVar(&f.livekitToken, "livekit-token-file", "", "file holding the access token the agent minted for the avatar (kept off the command line)")
	fl.StringVar(&f.idempotencyKey, "idempotency-key", "", "Idempotency-Key header: a retry with the same key returns the same session")
	return cmd
}

// request builds the request body from the flags, checking what can be
// checked without the server (its limits stay the server's to enforce).
func (f createFlags) request(cmd *cobra.Command) (apiv1.CreateSessionRequest, error) {
	req := apiv1.CreateSessionRequest{Avatar: f.avatar, Voice: f.voice}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return req, usagef(cmd, "--label: %v", err)
	}
	req.Labels = labels
	if cmd.Flags().Changed("idle-timeout") {
		secs, err := wholeSeconds(f.idleTimeout)
		if err != nil {
			return req, usagef(cmd, "--idle-timeout: %v", err)
		}
		req.IdleTimeoutSeconds = &secs
	}
	if cmd.Flags().Changed("max-duration") {
		secs, err := wholeSeconds(f.maxDuration)
		if err != nil {
			return req, usagef(cmd, "--max-duration: %v", err)
		}
		req.MaxDurationSeconds = &secs
	}
	if cmd.Flags().Changed("restart-policy") {
		if f.restartPolicy != apiv1.RestartOnWorkerLost && f.restartPolicy != apiv1.RestartNever {
			return req, usagef(cmd, "--restart-policy: want %s or %s", apiv1.RestartOnWorkerLost, apiv1.RestartNever)
		}
		req.RestartPolicy = f.restartPolicy
	}
	if cmd.Flags().Changed("replace-timeout") {
		secs, err := wholeSeconds(f.replaceTimeout)
		if err != nil {
			return req, usagef(cmd, "--replace-timeout: %v", err)
		}
		req.ReplaceTimeoutSeconds = &secs
	}
	if (f.livekitURL == "") != (f.livekitToken == "") {
		return req, usagef(cmd, "--livekit-url and --livekit-token-file go together")
	}
	if f.livekitURL != "" {
		tok, err := readToken(f.livekitToken)
		if err != nil {
			return req, usagef(cmd, "--livekit-token-file: %v", err)
		}
		if err := livekitroom.Validate(f.livekitURL, tok); err != nil {
			return req, usagef(cmd, "livekit %v", err)
		}
		req.LiveKit = &apiv1.LiveKitJoin{URL: f.livekitURL, Token: tok}
	}
	if cmd.Flags().Changed("idempotency-key") && f.idempotencyKey == "" {
		return req, usagef(cmd, "--idempotency-key must not be empty")
	}
	return req, nil
}

// readToken reads a LiveKit access token from a file (surrounding white
// space dropped), refusing one larger than the API takes.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, livekitroom.MaxToken+2))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) > livekitroom.MaxToken {
		return "", fmt.Errorf("%s: more than %d bytes", path, livekitroom.MaxToken)
	}
	return tok, nil
}
