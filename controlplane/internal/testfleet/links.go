package testfleet

import (
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/replica"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// Links fills in opts what a replica of this fleet needs to reach it:
// etcd, NATS and a control-plane certificate of the fleet CA (none when
// the fleet runs with FleetInsecure). Tests that start replicas of their
// own use it, so those replicas talk to workers as the fleet's do.
func (f *Fleet) Links(opts replica.Options) replica.Options {
	f.t.Helper()
	opts.EtcdEndpoints, opts.NATSURL = f.Etcd.Endpoints(), f.NATS.URL()
	if opts.FleetTLS == nil && !f.opts.FleetInsecure {
		m, err := f.CA.Material(fleetpki.Request{ControlPlane: true})
		if err != nil {
			f.t.Fatal(err)
		}
		opts.FleetTLS = m
	}
	return opts
}
