package main

import (
	"fmt"

	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
)

// avatarPreviews renders every avatar's preview once (frame 0, at most
// 256 px, a few KB of JPEG each), for the control plane's catalogue. An
// avatar whose preview fails is served without one (its previews answer
// NotFound) rather than failing the worker.
func (e *engine) avatarPreviews() (server.Previews, error) {
	out := map[string]server.Preview{}
	for _, name := range e.avatars.Names() {
		p, err := e.avatars.Get(name)
		if err != nil {
			return nil, fmt.Errorf("avatar preview %s: %w", name, err)
		}
		img, r, err := p.Preview(avatar.PreviewMaxSide)
		if err != nil {
			e.log.Warn("avatar preview skipped", "avatar", name, "err", err)
			continue
		}
		out[name] = server.Preview{Image: img, ContentType: avatar.PreviewContentType, Width: r.Dx(), Height: r.Dy()}
	}
	return func(name string) (server.Preview, bool) {
		p, ok := out[name]
		return p, ok
	}, nil
}
