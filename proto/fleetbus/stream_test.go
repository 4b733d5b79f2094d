package fleetbus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// jetStreamWithStoreLimit starts NATS whose JetStream file store holds at
// most maxStore bytes, as a machine short of disk would have by default.
func jetStreamWithStoreLimit(t *testing.T, maxStore int64) jetstream.JetStream {
	t.Helper()
	ns, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: t.TempDir(), MaxStore: maxStore})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestStreamShrinksToTheServersStoreLimit: a server whose store cannot hold
// the stream's size gets the largest halving of it that fits, down to
// MinStreamMaxBytes; below that the server's refusal is returned.
func TestStreamShrinksToTheServersStoreLimit(t *testing.T) {
	ensure := func(ctx context.Context, js jetstream.JetStream, opts ...fleetbus.StreamOption) (jetstream.Stream, error) {
		return fleetbus.EnsureStream(ctx, js, time.Hour, opts...)
	}
	createIfMissing := func(ctx context.Context, js jetstream.JetStream, opts ...fleetbus.StreamOption) (jetstream.Stream, error) {
		return fleetbus.CreateStreamIfMissing(ctx, js, time.Hour, opts...)
	}
	for _, tc := range []struct {
		name     string
		make     func(context.Context, jetstream.JetStream, ...fleetbus.StreamOption) (jetstream.Stream, error)
		maxStore int64
		opts     []fleetbus.StreamOption
		want     int64 // 0: refused
	}{
		{"room for the default", ensure, 2 << 30, nil, fleetbus.DefaultStreamMaxBytes},
		{"default halved to fit", ensure, 100 << 20, nil, 64 << 20},
		{"asked size halved to fit", ensure, 50 << 20, []fleetbus.StreamOption{fleetbus.WithMaxBytes(96 << 20)}, 48 << 20},
		{"no room for the smallest", ensure, 8 << 20, nil, 0},
		{"created when missing, halved to fit", createIfMissing, 100 << 20, nil, 64 << 20},
		{"not created when no room", createIfMissing, 8 << 20, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			js := jetStreamWithStoreLimit(t, tc.maxStore)
			st, err := tc.make(ctx, js, tc.opts...)
			if tc.want == 0 {
				var apiErr *jetstream.APIError
				if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10047 {
					t.Fatalf("err = %v, want the server's insufficient storage error", err)
				}
				if _, err := js.Stream(ctx, fleetbus.StreamName); !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Fatalf("stream after refusal: %v, want not found", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.MaxBytes; got != tc.want {
				t.Fatalf("returned stream MaxBytes = %d MiB, want %d MiB", got>>20, tc.want>>20)
			}
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.Config.MaxBytes != tc.want {
				t.Fatalf("server's stream MaxBytes = %d MiB, want %d MiB", info.Config.MaxBytes>>20, tc.want>>20)
			}
		})
	}
}

// TestCreateStreamIfMissingKeepsAnExistingStream: a worker that finds the
// stream leaves it as the control plane configured it.
func TestCreateStreamIfMissingKeepsAnExistingStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := jetStreamWithStoreLimit(t, 2<<30)
	if _, err := fleetbus.EnsureStream(ctx, js, 2*time.Hour, fleetbus.WithMaxBytes(32<<20)); err != nil {
		t.Fatal(err)
	}
	st, err := fleetbus.CreateStreamIfMissing(ctx, js, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxBytes != 32<<20 || c.MaxAge != 2*time.Hour {
		t.Fatalf("existing stream changed to MaxBytes %d, MaxAge %s", c.MaxBytes, c.MaxAge)
	}
}
