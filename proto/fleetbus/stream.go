package fleetbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStreamMaxBytes bounds the events stream's size unless
// WithMaxBytes says otherwise: the oldest events go first.
const DefaultStreamMaxBytes = 1 << 30

// MinStreamMaxBytes is the smallest size EnsureStream and
// CreateStreamIfMissing shrink the stream to when the server cannot reserve
// the size asked for.
const MinStreamMaxBytes = 16 << 20

// storageResourcesExceeded is JetStream's JSStorageResourcesExceededErr: the
// server's store limit (by default 75% of the store's free disk) cannot
// hold the stream's MaxBytes on top of what it has already reserved.
const storageResourcesExceeded jetstream.ErrorCode = 10047

// StreamOption changes the events stream's configuration.
type StreamOption func(*jetstream.StreamConfig)

// WithMaxBytes bounds the stream's size (n <= 0: DefaultStreamMaxBytes).
func WithMaxBytes(n int64) StreamOption {
	return func(c *jetstream.StreamConfig) {
		if n > 0 {
			c.MaxBytes = n
		}
	}
}

// StreamConfig is the configuration of the events stream: events older than
// maxAge, or beyond the size bound, are discarded oldest first.
func StreamConfig(maxAge time.Duration, opts ...StreamOption) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:      StreamName,
		Subjects:  []string{EventsAll},
		Storage:   jetstream.FileStorage,
		MaxAge:    maxAge,
		MaxBytes:  DefaultStreamMaxBytes,
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardOld,
	}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// EnsureStream creates or updates the stream that keeps events for replay
// (SSE clients that reconnect, audits).
//
// When the server cannot reserve the stream's size, the size is halved until
// it can, down to MinStreamMaxBytes: a machine short of disk keeps fewer old
// events rather than refusing to start. The returned stream's
// CachedInfo().Config.MaxBytes is the size kept; callers warn when it is less
// than they asked for.
func EnsureStream(ctx context.Context, js jetstream.JetStream, maxAge time.Duration, opts ...StreamOption) (jetstream.Stream, error) {
	st, err := fitStream(StreamConfig(maxAge, opts...), func(c jetstream.StreamConfig) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, c)
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", StreamName, err)
	}
	return st, nil
}

// CreateStreamIfMissing creates the events stream when nobody has yet, and
// returns an existing one as whoever created it configured it (a worker may
// create the stream before any control plane starts, never change it). The
// size shrinks to fit as in EnsureStream.
func CreateStreamIfMissing(ctx context.Context, js jetstream.JetStream, maxAge time.Duration, opts ...StreamOption) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = fitStream(StreamConfig(maxAge, opts...), func(c jetstream.StreamConfig) (jetstream.Stream, error) {
			return js.CreateStream(ctx, c)
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, StreamName) // created meanwhile by another
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	return st, nil
}

// fitStream applies c, halving its MaxBytes while the server says its store
// cannot hold it and the half is still at least MinStreamMaxBytes.
func fitStream(c jetstream.StreamConfig, apply func(jetstream.StreamConfig) (jetstream.Stream, error)) (jetstream.Stream, error) {
	for {
		st, err := apply(c)
		var apiErr *jetstream.APIError
		if err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != storageResourcesExceeded || c.MaxBytes/2 < MinStreamMaxBytes {
			if err != nil && c.MaxBytes > 0 {
				return nil, fmt.Errorf("max bytes %d: %w", c.MaxBytes, err)
			}
			return st, err
		}
		c.MaxBytes /= 2
	}
}
