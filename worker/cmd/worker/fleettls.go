package main

import (
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"

	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// fleetTLS is the worker's fleet TLS: the --fleet-* files; or, without
// them, a certificate the worker issues itself from the development CA in
// <data-dir>/pki (what the embedded control plane of `make run` makes, so
// bin/worker with no flags joins it); or nothing when --fleet-insecure
// allows it. Anything else is a usage error.
func (c *config) fleetTLS(log *slog.Logger) (*fleetpki.Material, error) {
	if files := c.links.Fleet(); files.Set() {
		m, err := files.Load()
		if err != nil {
			return nil, usagef("fleet TLS: %v", err)
		}
		if err := m.Names(fleetpki.WorkerURI(c.opts.ID)); err != nil {
			return nil, usagef("--fleet-cert is not worker %s's: %v", c.opts.ID, err)
		}
		return m, nil
	}
	dir := fleetpki.DevDir(c.dataDir)
	m, err := fleetpki.DevWorker(dir, c.opts.ID, c.devHosts())
	switch {
	case err == nil:
		log.Warn("fleet TLS from the development CA in the data dir (development only: give a deployment's worker --fleet-ca, --fleet-cert and --fleet-key)", "dir", dir)
		return m, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	case c.links.FleetInsecure:
		log.Warn("fleet TLS off: WorkerService is plaintext and accepts any caller (--fleet-insecure)")
		return nil, nil
	}
	return nil, usagef("no fleet certificate: set --fleet-ca, --fleet-cert and --fleet-key (see avatarctl certs), " +
		"start the embedded control plane first with the same --data-dir (development), or set --fleet-insecure on a trusted network")
}

// devHosts are the names a development certificate covers: the advertised
// and listen hosts, loopback and the hostname.
func (c *config) devHosts() []string {
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	for _, addr := range []string{c.opts.AdvertiseAddress, c.opts.GRPCListen} {
		if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
			if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
				hosts = append(hosts, h)
			}
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}
