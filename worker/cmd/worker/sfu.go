package main

import (
	"log/slog"

	"github.com/avatarfleet/avatarfleet/worker/pkg/agent"
)

// attachSFU is the seam where the embedded SFU joins the worker. The
// integrator opens the SFU here (sfu.New with opts.MediaPort, opts.PublicIP,
// …) and sets:
//
//   - opts.Signaling: the SFU as server.Signaling (WHEP viewers, WHIP
//     publishers, stats) for the gRPC service;
//   - e.NewMedia: a mediaruntime.NewMedia that opens the session's room
//     with the hooks as its callbacks (RoomOptions{OnKeyframeRequest:
//     hooks.RequestKeyframe, OnAudio: hooks.PushPCM, OnViewersChanged:
//     hooks.ViewersChanged}) and returns the room as a mediaruntime.Media
//     (WriteVideo/WriteAudio converting pipeline.Sample to sfu.Sample, and
//     Close);
//   - opts.Collectors: the SFU's Prometheus collector;
//
// and returns what stops the SFU (called after the agent has stopped).
// Until then the worker runs headless: media is discarded and WHEP/WHIP
// answer Unimplemented.
func attachSFU(_ *agent.Options, _ *engine, _ *slog.Logger) (closeSFU func() error, err error) {
	return func() error { return nil }, nil
}
