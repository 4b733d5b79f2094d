package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/kubescale"
)

// Defaults of "workers scale".
const (
	DefaultStatefulSet  = "avatarfleet-worker"
	defaultScaleTimeout = 10 * time.Minute
	kubeRequestTimeout  = 30 * time.Second
)

// scaleFlags are the flags of "workers scale".
type scaleFlags struct {
	replicas    int
	statefulset string
	namespace   string
	kubeconfig  string
	kubecontext string
	timeout     time.Duration
	poll        time.Duration
	keepDrained bool
}

// newScaleCommand returns "workers scale --replicas N".
func newScaleCommand(a *app) *cobra.Command {
	var f scaleFlags
	cmd := &cobra.Command{
		Use:   "scale --replicas N",
		Short: "Scale the worker StatefulSet; scaling down drains and migrates first",
		Long: "scale changes the replicas of the worker StatefulSet (Kubernetes). Each worker's id is\n" +
			"its pod's name, <statefulset>-<ordinal>.\n\n" +
			"Down from M to N: the workers of ordinals N..M-1 are drained with migration (their\n" +
			"sessions move to the workers that stay), a line is printed each time a worker's\n" +
			"session count changes, and only when none holds a session is the scale changed.\n" +
			"When --timeout passes first, the replicas stay as they were, the workers it drained\n" +
			"are undrained again (unless --keep-drained) and the exit code is 3.\n\n" +
			"Up from M to N: the scale is changed, then it waits until the workers of ordinals\n" +
			"M..N-1 have registered and are active (undraining one that comes back with a drain\n" +
			"mark of an earlier scale-down); exit 3 when --timeout passes first.\n\n" +
			"The cluster comes from --kubeconfig, else $KUBECONFIG, else ~/.kube/config, else the\n" +
			"pod's service account (in-cluster).",
		Args: exactArgs(),
	}
	cmd.RunE = withErrors(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
		if err := f.validate(cmd); err != nil {
			return err
		}
		return a.workersScale(ctx, cmd, f)
	})
	fl := cmd.Flags()
	fl.IntVar(&f.replicas, "replicas", 0, fmt.Sprintf("the number of workers wanted (0..%d; required)", kubescale.MaxReplicas))
	fl.StringVar(&f.statefulset, "statefulset", DefaultStatefulSet, "the workers' StatefulSet")
	fl.StringVarP(&f.namespace, "namespace", "n", "", "its namespace (default: the kubeconfig context's, else \"default\")")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
	fl.StringVar(&f.kubecontext, "context", "", "kubeconfig context (default: its current context)")
	fl.DurationVar(&f.timeout, "timeout", defaultScaleTimeout, "how long the drain and the scale may take")
	fl.BoolVar(&f.keepDrained, "keep-drained", false, "on a timeout, leave the drained workers draining")
	fl.DurationVar(&f.poll, "poll-interval", kubescale.DefaultPollInterval, "how often to list the workers")
	_ = fl.MarkHidden("poll-interval")
	return cmd
}

// validate checks the flags before any request.
func (f scaleFlags) validate(cmd *cobra.Command) error {
	if !cmd.Flags().Changed("replicas") {
		return usagef(cmd, "--replicas is required")
	}
	if f.replicas < 0 || f.replicas > kubescale.MaxReplicas {
		return usagef(cmd, "--replicas must be within 0..%d, got %d", kubescale.MaxReplicas, f.replicas)
	}
	if errs := validation.IsDNS1123Label(f.statefulset); len(errs) > 0 {
		return usagef(cmd, "--statefulset %q: %s", f.statefulset, strings.Join(errs, "; "))
	}
	if f.namespace != "" {
		if errs := validation.IsDNS1123Label(f.namespace); len(errs) > 0 {
			return usagef(cmd, "--namespace %q: %s", f.namespace, strings.Join(errs, "; "))
		}
	}
	if f.timeout <= 0 {
		return usagef(cmd, "--timeout must be positive, got %s", f.timeout)
	}
	if f.poll <= 0 {
		return usagef(cmd, "--poll-interval must be positive, got %s", f.poll)
	}
	return nil
}

func (a *app) workersScale(ctx context.Context, cmd *cobra.Command, f scaleFlags) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	cs, ns, err := a.kubeClient(f)
	if err != nil {
		return err
	}
	progress := a.opts.Stdout
	if a.output == outputJSON {
		progress = a.opts.Stderr
	}
	res, err := kubescale.Scale(ctx, kubescale.Options{
		Target:       kubescale.StatefulSet{Client: cs, Namespace: ns, Name: f.statefulset},
		Fleet:        c,
		Replicas:     int32(f.replicas),
		Timeout:      f.timeout,
		PollInterval: f.poll,
		KeepDrained:  f.keepDrained,
		Progress:     progress,
	})
	if errors.Is(err, kubescale.ErrTimeout) {
		return &runError{code: ExitTimeout, msg: describe(err), err: err}
	}
	if err != nil {
		return err
	}
	if a.output == outputJSON {
		return writeJSON(a.opts.Stdout, res)
	}
	return nil
}

// kubeClient returns an apps/v1 client of the cluster and the namespace to use:
// --namespace, else the kubeconfig context's, else "default".
func (a *app) kubeClient(f scaleFlags) (appsv1client.AppsV1Interface, string, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: f.kubeconfig}
	if f.kubeconfig == "" {
		if env := a.opts.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
			rules.Precedence = filepath.SplitList(env)
		} else if home := a.opts.Getenv("HOME"); home != "" {
			rules.Precedence = []string{filepath.Join(home, clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)}
		}
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.kubecontext})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "avatarctl"
	cfg.Timeout = kubeRequestTimeout
	ns := f.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", fmt.Errorf("kubeconfig namespace: %w", err)
		}
	}
	cs, err := appsv1client.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, ns, nil
}
