package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// newWorkersCommand returns "workers" and its verbs.
func newWorkersCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("workers", "List, inspect, drain and scale workers (admin scope)")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "list",
			Short: "List the workers of the fleet",
			Args:  exactArgs(),
			RunE:  withErrors(a.workersList),
		},
		&cobra.Command{
			Use:   "get ID",
			Short: "Show one worker and its GPUs",
			Args:  exactArgs("ID"),
			RunE:  withErrors(a.workersGet),
		},
		newDrainCommand(a),
		&cobra.Command{
			Use:   "undrain ID",
			Short: "Open a drained worker to new sessions again",
			Args:  exactArgs("ID"),
			RunE:  withErrors(a.workersUndrain),
		},
		newScaleCommand(a),
	)
	return cmd
}

func (a *app) workersList(ctx context.Context, cmd *cobra.Command, _ []string) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	workers, err := c.ListWorkers(ctx)
	if err != nil {
		return err
	}
	if a.output == outputJSON {
		return writeJSON(a.opts.Stdout, apiv1.WorkerList{Workers: workers})
	}
	return renderWorkers(a.opts.Stdout, workers)
}

func (a *app) workersGet(ctx context.Context, cmd *cobra.Command, args []string) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	w, err := c.GetWorker(ctx, args[0])
	if err != nil {
		return err
	}
	return a.printWorker(*w)
}

func (a *app) workersUndrain(ctx context.Context, cmd *cobra.Command, args []string) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	w, err := c.UndrainWorker(ctx, args[0])
	if err != nil {
		return err
	}
	if a.output == outputJSON {
		if w == nil { // the response had no body: show the worker anyway
			if w, err = c.GetWorker(ctx, args[0]); err != nil {
				return err
			}
		}
		return writeJSON(a.opts.Stdout, w)
	}
	return a.printf("worker %s: undrained, open to new sessions\n", args[0])
}

// printWorker prints one worker in the chosen format.
func (a *app) printWorker(w apiv1.Worker) error {
	if a.output == outputJSON {
		return writeJSON(a.opts.Stdout, w)
	}
	return renderWorker(a.opts.Stdout, w)
}
