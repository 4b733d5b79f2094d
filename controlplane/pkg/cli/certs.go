package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// certsOptions are the flags of "certs init" and "certs issue".
type certsOptions struct {
	dir          string
	validity     time.Duration
	force        bool
	controlPlane bool
	worker       string
	hosts        []string
}

// newCertsCommand is "certs": the fleet CA and the certificates of control
// planes and workers, as PEM files for a deployment. It works offline.
func newCertsCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("certs", "Make the fleet CA and control-plane and worker certificates (offline)")
	var initOpts, issueOpts certsOptions
	initCmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Make a fleet CA: DIR/ca.crt and DIR/ca.key",
		Long: "Make a fleet CA (ECDSA P-256) as DIR/ca.crt and DIR/ca.key (owner-only).\n" +
			"Keep ca.key off the fleet's machines; hand each party ca.crt and its own certificate.",
		Args: exactArgs(),
		RunE: withErrors(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			return a.certsInit(ctx, cmd, initOpts)
		}),
	}
	initCmd.Flags().StringVar(&initOpts.dir, "dir", "", "directory of the CA files (required)")
	initCmd.Flags().DurationVar(&initOpts.validity, "validity", fleetpki.DefaultCAValidity, "lifetime of the CA")
	initCmd.Flags().BoolVar(&initOpts.force, "force", false, "replace an existing CA (every certificate it issued stops being trusted)")

	issueCmd := &cobra.Command{
		Use:   "issue --dir DIR (--controlplane | --worker ID) [--host NAME]...",
		Short: "Issue a control-plane or worker certificate from the CA in DIR",
		Long: "Issue a certificate signed by DIR/ca.crt and DIR/ca.key: for a control plane\n" +
			"(DIR/controlplane.crt and .key, naming avatarfleet://controlplane) or for worker ID\n" +
			"(DIR/worker-ID.crt and .key, naming avatarfleet://worker/ID). A worker's --host\n" +
			"values must cover the host of its --advertise-address (DNS name or IP): the\n" +
			"control plane checks it as well as the worker id.",
		Args: exactArgs(),
		RunE: withErrors(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			return a.certsIssue(ctx, cmd, issueOpts)
		}),
	}
	f := issueCmd.Flags()
	f.StringVar(&issueOpts.dir, "dir", "", "directory holding ca.crt and ca.key, where the certificate is written (required)")
	f.BoolVar(&issueOpts.controlPlane, "controlplane", false, "issue a control-plane certificate")
	f.StringVar(&issueOpts.worker, "worker", "", "issue the certificate of worker ID")
	f.StringArrayVar(&issueOpts.hosts, "host", nil, "DNS name or IP address the party is reached at (repeatable)")
	f.DurationVar(&issueOpts.validity, "validity", fleetpki.DefaultCertValidity, "lifetime of the certificate")
	f.BoolVar(&issueOpts.force, "force", false, "replace existing files")
	cmd.AddCommand(initCmd, issueCmd)
	return cmd
}

func (a *app) certsInit(_ context.Context, cmd *cobra.Command, o certsOptions) error {
	if o.dir == "" {
		return usagef(cmd, "--dir is required")
	}
	if o.validity < 24*time.Hour {
		return usagef(cmd, "--validity %s: at least 24h", o.validity)
	}
	crt := filepath.Join(o.dir, "ca.crt")
	if err := refuseExisting(crt, o.force); err != nil {
		return usagef(cmd, "%v", err)
	}
	ca, err := fleetpki.NewCA("AvatarFleet fleet CA", o.validity)
	if err != nil {
		return err
	}
	if err := ca.WriteFiles(o.dir); err != nil {
		return err
	}
	fmt.Fprintf(a.opts.Stdout, "CA written: %s, %s (keep the key safe; valid until %s)\n",
		crt, filepath.Join(o.dir, "ca.key"), ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	return nil
}

func (a *app) certsIssue(_ context.Context, cmd *cobra.Command, o certsOptions) error {
	switch {
	case o.dir == "":
		return usagef(cmd, "--dir is required")
	case o.controlPlane == (o.worker != ""):
		return usagef(cmd, "give exactly one of --controlplane and --worker ID")
	case o.worker != "" && !fleetstore.ValidName(o.worker):
		return usagef(cmd, "--worker %q: want 1..64 characters of [a-zA-Z0-9_.-] starting with a letter or digit", o.worker)
	case o.validity < time.Hour:
		return usagef(cmd, "--validity %s: at least 1h", o.validity)
	}
	ca, err := fleetpki.LoadCA(filepath.Join(o.dir, "ca.crt"), filepath.Join(o.dir, "ca.key"))
	if errors.Is(err, fs.ErrNotExist) {
		return usagef(cmd, "no CA in %s: run 'avatarctl certs init --dir %s' first", o.dir, o.dir)
	}
	if err != nil {
		return err
	}
	name, hosts := "controlplane", o.hosts
	if o.worker != "" {
		name = "worker-" + o.worker
		if len(hosts) == 0 {
			hosts = []string{o.worker}
		}
	}
	if err := refuseExisting(filepath.Join(o.dir, name+".crt"), o.force); err != nil {
		return usagef(cmd, "%v", err)
	}
	is, err := ca.Issue(fleetpki.Request{ControlPlane: o.controlPlane, WorkerID: o.worker, Hosts: hosts, Validity: o.validity})
	if err != nil {
		return err
	}
	if err := is.WriteFiles(o.dir, name); err != nil {
		return err
	}
	fmt.Fprintf(a.opts.Stdout, "certificate written: %s, %s (hosts %v)\n",
		filepath.Join(o.dir, name+".crt"), filepath.Join(o.dir, name+".key"), hosts)
	return nil
}

func refuseExisting(path string, force bool) error {
	if force {
		return nil
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists (--force replaces it)", path)
	}
	return nil
}
