// Command avatarctl is the admin CLI of AvatarFleet: it lists, inspects and
// drains workers and lists, creates and deletes sessions over the REST API,
// scales the worker StatefulSet without cutting a session (workers scale),
// and makes the fleet's CA and certificates (certs init|issue).
// See package cli for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, cli.Options{
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
	}, os.Args[1:])
	stop()
	os.Exit(code)
}
