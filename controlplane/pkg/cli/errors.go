package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
)

// Exit codes of avatarctl.
const (
	// ExitOK is success.
	ExitOK = 0
	// ExitError is a failed command: an API error, a network error.
	ExitError = 1
	// ExitUsage is a bad command line; no request was sent.
	ExitUsage = 2
	// ExitTimeout is "workers drain --wait" or "workers scale" running
	// out of time (a scale-down that times out has not scaled).
	ExitTimeout = 3
)

// usageError is a bad command line. Its text ends with a pointer to the
// command's help, as cobra's own usage errors do.
type usageError struct {
	msg     string
	cmdPath string
}

func (e *usageError) Error() string {
	return fmt.Sprintf("%s\nRun '%s --help' for usage.", e.msg, e.cmdPath)
}

// usagef returns a usageError for cmd.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), cmdPath: cmd.CommandPath()}
}

// runError is a failed command. Its text is what avatarctl prints after
// "error: "; the original error stays reachable with errors.As (an
// *apiclient.APIError, say).
type runError struct {
	code int
	msg  string
	err  error
}

func (e *runError) Error() string { return e.msg }
func (e *runError) Unwrap() error { return e.err }

// ExitCode maps an error returned by the root command to avatarctl's exit
// code: nil is ExitOK, a usage error (ours or cobra's: unknown command or
// flag) ExitUsage, a drain wait or scale timeout ExitTimeout, anything else
// ExitError.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var re *runError
	if errors.As(err, &re) {
		return re.code
	}
	// Commands turn every error of theirs into a runError; what is left
	// comes from cobra's parsing of the command line.
	return ExitUsage
}

// withErrors wraps a command body: usage errors pass through, anything else
// becomes a runError printed as "<code>: <message>" for API errors and as
// the error's own text otherwise.
func withErrors(run func(ctx context.Context, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := run(cmd.Context(), cmd, args)
		if err == nil {
			return nil
		}
		var ue *usageError
		var re *runError
		if errors.As(err, &ue) || errors.As(err, &re) {
			return err
		}
		return &runError{code: ExitError, msg: describe(err), err: err}
	}
}

// describe is the printed text of a command's error.
func describe(err error) string {
	var ae *apiclient.APIError
	if errors.As(err, &ae) {
		msg := ae.Code + ": " + ae.Message
		if ae.RetryAfter > 0 {
			msg += fmt.Sprintf(" (retry after %s)", ae.RetryAfter)
		}
		return msg
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted: " + err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out: " + err.Error()
	}
	return err.Error()
}
