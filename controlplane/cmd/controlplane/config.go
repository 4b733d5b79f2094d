package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/placement"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/webhooks"
	"github.com/avatarfleet/avatarfleet/proto/fleetconfig"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Config is the control plane's whole configuration, as flags and
// AVATARFLEET_* variables set it (fleetconfig reads both). A setting is
// one field here, one line in AddFlags and, when it has bounds, one check
// in Validate.
type Config struct {
	Listen             string
	Etcd, NATS         string
	DataDir            string
	EmbeddedEtcdListen string
	EmbeddedNATSListen string
	APIKeysFile        string
	PublicURL          string
	PlacementPolicy    string
	EtcdPrefix         string
	ReplicaID          string
	ViewerTokenTTL     time.Duration
	LeaderTTL          time.Duration
	HealthInterval     time.Duration
	HealthFailures     int
	SuspectAfter       time.Duration
	NoFence            bool
	SessionRetention   time.Duration
	// TLSCertFile and TLSKeyFile serve the REST listener over HTTPS.
	TLSCertFile, TLSKeyFile string
	// TokenKeysFile holds the session-token signing keys ("" → a file in
	// the data dir, made on first start).
	TokenKeysFile string
	// Limits are the per-key limits of keys whose entry sets none.
	Limits auth.Limits
	// Webhook deliveries: attempts per event, the first and the largest
	// delay between attempts, and the time one POST may take.
	WebhookMaxAttempts                   int
	WebhookRetryInitial, WebhookRetryMax time.Duration
	WebhookTimeout                       time.Duration

	Log   fleetconfig.Log
	Links fleetconfig.Links

	// TestHookMarkDelay is a test hook, set only by the environment
	// variable TestHookMarkDelayEnv (no flag): it holds this replica's
	// ready marks back that long after their creates answered, so an
	// end-to-end test can kill the replica in between. Never set it in a
	// deployment.
	TestHookMarkDelay time.Duration
}

// TestHookMarkDelayEnv names the test hook Config.TestHookMarkDelay.
const TestHookMarkDelayEnv = "AVATARFLEET_TEST_HOOK_MARK_DELAY"

// maxTestHookMarkDelay bounds the test hook.
const maxTestHookMarkDelay = 10 * time.Minute

// AddFlags registers every flag of c, with its default.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&c.Listen, "listen", ":8080", "HTTP listen address (REST API, signaling, demo page, /metrics)")
	fs.StringVar(&c.Etcd, "etcd", "", "comma-separated etcd endpoints; empty starts embedded etcd")
	fs.StringVar(&c.NATS, "nats", "", "NATS URL; empty starts embedded NATS with JetStream")
	fs.StringVar(&c.DataDir, "data-dir", ".avatarfleet", "data directory (embedded etcd and NATS, generated API key, development PKI)")
	fs.StringVar(&c.EmbeddedEtcdListen, "embedded-etcd-listen", "127.0.0.1:2379", "client address of embedded etcd")
	fs.StringVar(&c.EmbeddedNATSListen, "embedded-nats-listen", "127.0.0.1:4222", "address of embedded NATS")
	fs.StringVar(&c.APIKeysFile, "api-keys-file", "", "YAML file of API keys and scopes")
	fs.StringVar(&c.PublicURL, "public-url", "", "public base URL handed out in session URLs (default: from each request)")
	fs.StringVar(&c.PlacementPolicy, "placement-policy", "spread", "placement policy: spread or pack")
	fs.StringVar(&c.EtcdPrefix, "etcd-prefix", fleetstore.DefaultPrefix, "etcd key prefix of the fleet")
	fs.StringVar(&c.ReplicaID, "replica-id", host+"-"+fmt.Sprint(os.Getpid()), "this replica's name in logs and elections")
	fs.DurationVar(&c.ViewerTokenTTL, "viewer-token-ttl", time.Hour, "lifetime of viewer tokens")
	fs.DurationVar(&c.LeaderTTL, "leader-ttl", 5*time.Second, "lease of the supervisor leader")
	fs.DurationVar(&c.HealthInterval, "health-interval", 250*time.Millisecond, "time between worker health probes")
	fs.IntVar(&c.HealthFailures, "health-failures", 3, "failed health probes in a row before a worker is suspect")
	fs.DurationVar(&c.SuspectAfter, "health-suspect-after", time.Second, "silence of a worker (no probe answered) before it is suspect")
	fs.BoolVar(&c.NoFence, "no-fence", false, "never revoke the lease of a dead worker; wait for it to expire")
	fs.DurationVar(&c.SessionRetention, "session-retention", 24*time.Hour, "how long ended sessions stay readable")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "PEM certificate (chain) of the REST listener; with --tls-key serves HTTPS")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TokenKeysFile, "token-keys-file", "", "YAML/JSON file of session-token signing keys (first signs, all verify); default <data-dir>/token-keys.yaml, made on first start")
	c.Limits = auth.DefaultLimits()
	fs.IntVar(&c.Limits.MaxSessions, "default-max-sessions", auth.DefaultMaxSessions, "live sessions per API key across the fleet, unless its keys-file entry says otherwise (0: no limit)")
	fs.Float64Var(&c.Limits.Rate, "default-rate", auth.DefaultRate, "requests per second per API key on each replica (0: no limit)")
	fs.IntVar(&c.Limits.Burst, "default-burst", auth.DefaultBurst, "requests per API key at once above the rate")
	fs.IntVar(&c.Limits.MaxEventStreams, "default-max-streams", auth.DefaultMaxEventStreams, "open event streams per API key on each replica (0: no limit)")
	fs.IntVar(&c.Limits.MaxPendingViewers, "default-max-pending-viewers", auth.DefaultMaxPendingViewers, "WHEP viewers of one session still connecting (per viewer token: at most 5)")
	fs.IntVar(&c.WebhookMaxAttempts, "webhook-max-attempts", webhooks.DefaultMaxAttempts, "attempts to deliver an event to a webhook before it is dropped and counted as a dead letter")
	fs.DurationVar(&c.WebhookRetryInitial, "webhook-retry-initial", webhooks.DefaultInitialDelay, "delay after a webhook's first failed attempt; it doubles per attempt (with jitter)")
	fs.DurationVar(&c.WebhookRetryMax, "webhook-retry-max", webhooks.DefaultMaxDelay, "longest delay between two attempts of a webhook")
	fs.DurationVar(&c.WebhookTimeout, "webhook-timeout", webhooks.DefaultTimeout, "time a webhook receiver has to answer one POST")
	c.Log.AddFlags(fs)
	c.Links.AddFlags(fs)
}

// Embedded reports whether the control plane runs etcd and NATS itself
// (neither --etcd nor --nats given): the single-machine default.
func (c Config) Embedded() bool { return c.Etcd == "" && c.NATS == "" }

// Validate checks every setting; errors name the flag.
func (c Config) Validate() error {
	switch {
	case c.ViewerTokenTTL < time.Minute:
		return errors.New("--viewer-token-ttl: at least 1m")
	case c.LeaderTTL < time.Second:
		return errors.New("--leader-ttl: at least 1s")
	case c.HealthInterval < 100*time.Millisecond:
		return errors.New("--health-interval: at least 100ms")
	case c.HealthFailures < 1:
		return errors.New("--health-failures: at least 1")
	case c.SuspectAfter < c.HealthInterval:
		return errors.New("--health-suspect-after: at least --health-interval")
	case c.SessionRetention < time.Minute:
		return errors.New("--session-retention: at least 1m")
	case c.DataDir == "":
		return errors.New("--data-dir: empty")
	case c.WebhookMaxAttempts < 1 || c.WebhookMaxAttempts > 1000:
		return errors.New("--webhook-max-attempts: 1 to 1000")
	case c.WebhookRetryInitial < 10*time.Millisecond:
		return errors.New("--webhook-retry-initial: at least 10ms")
	case c.WebhookRetryMax < c.WebhookRetryInitial:
		return errors.New("--webhook-retry-max: at least --webhook-retry-initial")
	case c.WebhookTimeout < 100*time.Millisecond || c.WebhookTimeout > 5*time.Minute:
		return errors.New("--webhook-timeout: 100ms to 5m")
	case c.TestHookMarkDelay < 0 || c.TestHookMarkDelay > maxTestHookMarkDelay:
		return fmt.Errorf("%s: 0 to %s", TestHookMarkDelayEnv, maxTestHookMarkDelay)
	case !strings.HasPrefix(c.EtcdPrefix, "/"):
		return fmt.Errorf("--etcd-prefix %q: must start with /", c.EtcdPrefix)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("default limits (--default-*): %w", err)
	}
	if _, ok := placement.ByName(c.PlacementPolicy); !ok {
		return fmt.Errorf("--placement-policy %q: want spread or pack", c.PlacementPolicy)
	}
	for _, a := range []struct{ flag, addr string }{
		{"--listen", c.Listen}, {"--embedded-etcd-listen", c.EmbeddedEtcdListen}, {"--embedded-nats-listen", c.EmbeddedNATSListen},
	} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: %w", a.flag, a.addr, err)
		}
	}
	if err := c.Log.Validate(); err != nil {
		return err
	}
	return c.Links.Validate()
}

// ParseConfig reads args and the environment into a Config and validates
// it. It returns flag.ErrHelp for -h (after printing the usage to out).
func ParseConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fleetconfig.SetUsage(fs, "controlplane", out)
	c.AddFlags(fs)
	if err := fleetconfig.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	c.Limits.MaxPendingViewersPerToken = min(auth.DefaultMaxPendingViewersPerToken, c.Limits.MaxPendingViewers)
	if v := getenv(TestHookMarkDelayEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return c, fmt.Errorf("%s=%q: %w", TestHookMarkDelayEnv, v, err)
		}
		c.TestHookMarkDelay = d
	}
	return c, c.Validate()
}
