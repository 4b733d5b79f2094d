// Command mkimage builds the project's container images as OCI layout tar
// files without a container daemon (deploy/images does the work); `make
// images` runs it with the root filesystem of scripts/rootfs.sh, the
// binaries of `make build` and the ONNX Runtime libraries.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/avatarfleet/avatarfleet/deploy/images"
)

func main() {
	c, err := ParseConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, c Config, log *slog.Logger) error {
	o, err := c.Options()
	if err != nil {
		return err
	}
	o.Log = log
	res, err := images.Build(ctx, o)
	if err != nil {
		return err
	}
	for _, r := range res {
		fmt.Printf("%s\t%s\t%s\n", r.Target, r.Path, r.Digest)
	}
	return nil
}
