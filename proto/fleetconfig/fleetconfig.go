// Package fleetconfig is the one reader of the binaries' configuration:
// command-line flags, then an AVATARFLEET_* environment variable for every
// flag not given (flags win; --grpc-listen ↔ AVATARFLEET_GRPC_LISTEN). It
// also holds the settings both binaries share (logging, the fleet's mutual
// TLS, etcd and NATS credentials), each as a struct that registers its
// flags and checks itself. This is the command-line layer: unlike the
// libraries below it, its errors name flags and variables.
package fleetconfig

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// EnvPrefix prefixes every flag's environment variable.
const EnvPrefix = "AVATARFLEET_"

// EnvName is the environment variable of a flag.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs, then sets every flag not on the command line
// from its environment variable, if set and not empty. It returns
// flag.ErrHelp for -h and an error for arguments left over.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// SetUsage gives fs a usage text that names the environment rule.
func SetUsage(fs *flag.FlagSet, name string, out io.Writer) {
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: %s [flags]\n\nEvery flag can also be set as %s<FLAG> (upper case, - → _); flags win.\n\n", name, EnvPrefix)
		fs.PrintDefaults()
	}
}

// Log is how a binary logs.
type Log struct {
	Level  string
	Format string
}

// AddFlags registers --log-level and --log-format.
func (l *Log) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.Format, "log-format", "text", "log format: text or json")
}

// Validate checks the level and format.
func (l Log) Validate() error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", l.Level)
	}
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf("--log-format %q: want text or json", l.Format)
	}
	return nil
}

// Logger is the logger writing to w (call Validate first; a bad level
// logs at info, a bad format as text).
func (l Log) Logger(w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// SplitList splits a comma-separated flag value, dropping empty parts.
func SplitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
