package main

import (
	"fmt"
	"log/slog"

	"github.com/avatarfleet/avatarfleet/sfu"
	"github.com/avatarfleet/avatarfleet/worker/pkg/agent"
	"github.com/avatarfleet/avatarfleet/worker/pkg/rooms"
)

// attachSFU opens the embedded SFU on the media port and joins it to the
// worker: its rooms are the sessions' transports (e.NewMedia), it answers
// WHEP/WHIP (opts.Signaling), and its figures go to /metrics. The returned
// function closes it; call it after the agent has stopped every session.
func attachSFU(opts *agent.Options, c sfuConfig, e *engine, log *slog.Logger) (closeSFU func() error, err error) {
	s, err := sfu.New(sfu.Config{
		MediaPort:           opts.MediaPort,
		ListenIP:            c.listenIP,
		PublicIP:            opts.PublicIP,
		ICEServers:          c.iceServers,
		ICELite:             c.iceLite,
		MaxViewersPerRoom:   c.maxViewers,
		DisableSendBatching: c.noBatching,
		DisableGSO:          c.noGSO,
		Logger:              log,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded SFU on UDP port %d: %w", opts.MediaPort, err)
	}
	r := rooms.New(s)
	opts.Signaling = r
	opts.Collectors = append(opts.Collectors, s)
	e.NewMedia = r.NewMedia
	log.Info("embedded SFU listening", "addr", s.LocalAddr().String(), "config", c.String())
	return s.Close, nil
}
