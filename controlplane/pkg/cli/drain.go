package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// Defaults of "workers drain".
const (
	defaultDrainTimeout = 10 * time.Minute
	defaultPollInterval = 500 * time.Millisecond
)

// drainFlags are the flags of "workers drain".
type drainFlags struct {
	wait    bool
	migrate bool
	timeout time.Duration
	poll    time.Duration
}

// newDrainCommand returns "workers drain ID [--migrate] [--wait] [--timeout D]".
func newDrainCommand(a *app) *cobra.Command {
	var f drainFlags
	cmd := &cobra.Command{
		Use:   "drain ID",
		Short: "Stop placing sessions on a worker; --wait until it is empty",
		Long: "drain stops placing new sessions on the worker; its live sessions end on their own.\n" +
			"With --migrate, the control plane moves its live sessions to other workers instead,\n" +
			"one by one at an idle moment; their viewers follow to the new worker.\n" +
			"With --wait, it prints the sessions left each time the count changes and returns\n" +
			"when none is left (exit 0), or when --timeout passes (exit 3).",
		Args: exactArgs("ID"),
	}
	cmd.RunE = withErrors(func(ctx context.Context, cmd *cobra.Command, args []string) error {
		if err := f.validate(cmd); err != nil {
			return err
		}
		return a.workersDrain(ctx, cmd, args[0], f)
	})
	fl := cmd.Flags()
	fl.BoolVar(&f.wait, "wait", false, "wait until the worker has no sessions left")
	fl.BoolVar(&f.migrate, "migrate", false, "move the worker's live sessions to other workers")
	fl.DurationVar(&f.timeout, "timeout", defaultDrainTimeout, "with --wait: how long to wait")
	fl.DurationVar(&f.poll, "poll-interval", defaultPollInterval, "with --wait: how often to look")
	_ = fl.MarkHidden("poll-interval")
	return cmd
}

// validate checks the flags before any request.
func (f drainFlags) validate(cmd *cobra.Command) error {
	if !f.wait && (cmd.Flags().Changed("timeout") || cmd.Flags().Changed("poll-interval")) {
		return usagef(cmd, "--timeout and --poll-interval need --wait")
	}
	if f.timeout <= 0 {
		return usagef(cmd, "--timeout must be positive, got %s", f.timeout)
	}
	if f.poll <= 0 {
		return usagef(cmd, "--poll-interval must be positive, got %s", f.poll)
	}
	return nil
}

func (a *app) workersDrain(ctx context.Context, cmd *cobra.Command, id string, f drainFlags) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	drain := c.DrainWorker
	if f.migrate {
		drain = c.DrainWorkerMigrate
	}
	w, err := drain(ctx, id)
	if err != nil {
		return err
	}
	if !f.wait {
		if w == nil { // the response had no body: look the worker up
			if w, err = c.GetWorker(ctx, id); err != nil {
				return err
			}
		}
		if a.output == outputJSON {
			return writeJSON(a.opts.Stdout, w)
		}
		return a.printf("worker %s: draining, %s left\n", id, sessionsLeft(w.Sessions))
	}
	return a.waitDrained(ctx, c, id, w, f)
}

// waitDrained polls the worker until it has no sessions left, printing the
// count each time it changes. In JSON mode the progress goes to stderr and
// the final worker to stdout.
func (a *app) waitDrained(ctx context.Context, c *apiclient.Client, id string, first *apiv1.Worker, f drainFlags) error {
	progress := a.opts.Stdout
	if a.output == outputJSON {
		progress = a.opts.Stderr
	}
	waitCtx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()

	w := first
	last, sawDraining, lastWarn, polls := -1, false, "", 0
	for {
		if w != nil {
			sawDraining = sawDraining || w.State == apiv1.WorkerDraining
			if w.State == apiv1.WorkerActive && sawDraining {
				return &runError{code: ExitError, msg: fmt.Sprintf(
					"worker %s was undrained while waiting (%s left)", id, sessionsLeft(w.Sessions))}
			}
			if w.Sessions != last {
				last = w.Sessions
				fmt.Fprintf(progress, "worker %s: %s left\n", id, sessionsLeft(w.Sessions))
			}
			if w.Sessions == 0 {
				if a.output == outputJSON {
					return writeJSON(a.opts.Stdout, w)
				}
				return a.printf("worker %s: drained\n", id)
			}
		}
		delay := f.poll
		if polls == 0 && w == nil {
			delay = 0 // the drain answer had no body: look at once
		}
		polls++
		select {
		case <-waitCtx.Done():
			return a.drainWaitEnded(ctx, id, last, f.timeout)
		case <-time.After(delay):
		}
		next, err := c.GetWorker(waitCtx, id)
		switch {
		case err == nil:
			w, lastWarn = next, ""
		case waitCtx.Err() != nil:
			return a.drainWaitEnded(ctx, id, last, f.timeout)
		case apiclient.HasCode(err, apiv1.CodeNotFound):
			// A worker that left the registry holds no sessions any more.
			fmt.Fprintf(progress, "worker %s: no longer registered\n", id)
			if a.output == outputJSON {
				return writeJSON(a.opts.Stdout, apiv1.Worker{ID: id, State: apiv1.WorkerDown})
			}
			return a.printf("worker %s: drained\n", id)
		case transient(err):
			if msg := describe(err); msg != lastWarn {
				lastWarn = msg
				fmt.Fprintf(a.opts.Stderr, "warning: %s (still waiting)\n", msg)
			}
		default:
			return err
		}
	}
}

// drainWaitEnded is the error of a wait that ended before the worker was
// empty: the caller's cancellation, or the timeout.
func (a *app) drainWaitEnded(ctx context.Context, id string, left int, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	msg := fmt.Sprintf("worker %s: still draining after %s", id, timeout)
	if left >= 0 {
		msg += fmt.Sprintf(", %s left", sessionsLeft(left))
	}
	return &runError{code: ExitTimeout, msg: msg, err: context.DeadlineExceeded}
}

// transient reports whether a poll error is worth another poll: a failed
// exchange (connection refused or reset) or a 5xx/429 answer.
func transient(err error) bool {
	var ae *apiclient.APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500 || ae.Status == http.StatusTooManyRequests
	}
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled)
}

// sessionsLeft is "1 session" or "N sessions".
func sessionsLeft(n int) string {
	if n == 1 {
		return "1 session"
	}
	return fmt.Sprintf("%d sessions", n)
}

// printf writes to stdout, reporting a failed write.
func (a *app) printf(format string, args ...any) error {
	if _, err := fmt.Fprintf(a.opts.Stdout, format, args...); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
