package whepviewer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// A Follower is a WHEP viewer that follows its session when it moves to
// another worker (live migration, re-placement): on a session.moved event
// of the session's event stream (GET /v1/sessions/{id}/events, with the
// same viewer token), on a failed or closed connection, or when media stop
// arriving, it POSTs a new offer to the same WHEP URL with the same token
// on a new PeerConnection, retrying with exponential backoff, and switches
// to it once its first packet arrives (make before break: the old
// connection plays until then). Each switch reports its gap: the time from
// the last packet on the old connection to the first on the new one.

// Reasons a Follower reconnects.
const (
	ReasonMoved   = "session.moved"
	ReasonDown    = "connection_down"
	ReasonStalled = "stalled"
)

// FollowOptions configure a Follower.
type FollowOptions struct {
	// Viewer configures each connection (ICEFailedTimeout defaults to 3 s).
	Viewer Options
	// EventsURL is the session's event stream; "" derives it from the
	// WHEP URL (…/sessions/{id}/whep → …/sessions/{id}/events). "-" turns
	// following events off (reconnect on failure only).
	EventsURL string
	// StallTimeout reconnects a connection that had media and then got no
	// packet for this long (default 2 s; < 0: never).
	StallTimeout time.Duration
	// FirstPacketTimeout bounds the wait for media on a new connection
	// before it is dropped and the offer sent again (default 5 s).
	FirstPacketTimeout time.Duration
	// MaxRetry bounds one reconnect's retries (default 60 s).
	MaxRetry time.Duration
	// OnSwitch, when set, is called after each switch.
	OnSwitch func(Switch)
}

// Switch is one move of a Follower to a new connection.
type Switch struct {
	Reason string
	// Triggered is when the reason was seen; LastBefore the last packet
	// on the old connection before FirstAfter, the first on the new one.
	Triggered, LastBefore, FirstAfter time.Time
	// Gap is FirstAfter - LastBefore (0 when the two overlapped).
	Gap time.Duration
	// Attempts counts the offers it took.
	Attempts int
}

// Follower is a viewer that follows its session; see FollowOptions.
type Follower struct {
	whepURL, token string
	opts           FollowOptions

	triggers chan trigger
	// moved wakes a reconnect waiting between attempts when a
	// session.moved event arrives: the session's new worker is ready, so
	// the next offer should go at once rather than after the backoff.
	moved  chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	cur      *Viewer
	switches []Switch
	lastErr  error
	ended    bool
}

type trigger struct {
	reason string
	viewer *Viewer   // the connection that failed (nil: a moved event)
	at     time.Time // when it was seen
}

// Follow dials the session's WHEP URL and keeps following it until Close.
func Follow(ctx context.Context, whepURL, token string, opts FollowOptions) (*Follower, error) {
	if opts.Viewer.ICEFailedTimeout == 0 {
		opts.Viewer.ICEFailedTimeout = 3 * time.Second
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = 2 * time.Second
	}
	if opts.FirstPacketTimeout <= 0 {
		opts.FirstPacketTimeout = 5 * time.Second
	}
	if opts.MaxRetry <= 0 {
		opts.MaxRetry = 60 * time.Second
	}
	if opts.EventsURL == "" {
		opts.EventsURL = strings.TrimSuffix(whepURL, "/whep") + "/events"
	}
	v, err := Dial(ctx, whepURL, token, opts.Viewer)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	f := &Follower{whepURL: whepURL, token: token, opts: opts, triggers: make(chan trigger, 8), moved: make(chan struct{}, 1), cancel: cancel, cur: v}
	f.watch(lctx, v)
	f.wg.Go(func() { f.run(lctx) })
	if opts.EventsURL != "-" {
		f.wg.Go(func() { f.followEvents(lctx) })
	}
	return f, nil
}

// Viewer is the current connection.
func (f *Follower) Viewer() *Viewer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// Switches are the switches so far.
func (f *Follower) Switches() []Switch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Switch(nil), f.switches...)
}

// Err is the error of the last reconnect that gave up (nil if none).
func (f *Follower) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// Close stops following and hangs up the current connection.
func (f *Follower) Close(ctx context.Context) error {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	v := f.cur
	f.mu.Unlock()
	return v.HangUp(ctx)
}

func (f *Follower) fire(t trigger) {
	select {
	case f.triggers <- t:
	default: // a reconnect is queued already
	}
}

// watch reports a connection that goes down or stalls.
func (f *Follower) watch(ctx context.Context, v *Viewer) {
	f.wg.Go(func() {
		var stall <-chan time.Time
		if f.opts.StallTimeout > 0 {
			t := time.NewTicker(f.opts.StallTimeout / 4)
			defer t.Stop()
			stall = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-v.Down():
				f.fire(trigger{reason: ReasonDown, viewer: v, at: time.Now()})
				return
			case now := <-stall:
				if last := v.LastPacket(); !last.IsZero() && now.Sub(last) > f.opts.StallTimeout {
					f.fire(trigger{reason: ReasonStalled, viewer: v, at: now})
					return
				}
			}
		}
	})
}

// run reconnects on each trigger that still concerns the current
// connection, one at a time.
func (f *Follower) run(ctx context.Context) {
	var lastSwitch time.Time
	// again re-tries a reconnect that gave up on a passing failure (not
	// a refused token or an ended session), so a follower never rests on
	// a dead connection while its session lives.
	var again <-chan time.Time
	var pending trigger
	for {
		var t trigger
		select {
		case <-ctx.Done():
			return
		case t = <-f.triggers:
		case <-again:
			t, again = pending, nil
		}
		f.mu.Lock()
		cur, ended := f.cur, f.ended
		f.mu.Unlock()
		if ended || (t.viewer != nil && t.viewer != cur) || (t.viewer == nil && t.at.Before(lastSwitch)) {
			continue // stale: that connection was replaced already
		}
		sw, err := f.reconnect(ctx, cur, t)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.mu.Lock()
			f.lastErr = err
			f.mu.Unlock()
			if !permanent(err) {
				pending, again = t, time.After(time.Second)
			}
			continue
		}
		lastSwitch = sw.FirstAfter
		if f.opts.OnSwitch != nil {
			f.opts.OnSwitch(sw)
		}
	}
}

// permanent reports whether a WHEP refusal will not change by retrying:
// the token is refused, or the session has ended.
func permanent(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden ||
		(se.Status == http.StatusNotFound && strings.Contains(se.Body, "has ended")))
}

// reconnect dials until a new connection delivers media, then swaps it in
// and hangs up the old one. Between attempts it waits with exponential
// backoff, cut short by a session.moved event.
func (f *Follower) reconnect(ctx context.Context, old *Viewer, t trigger) (Switch, error) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 50*time.Millisecond, 2*time.Second
	select { // a moved event from before this reconnect is this reconnect's cause
	case <-f.moved:
	default:
	}
	attempts := 0
	start := time.Now()
	var nv *Viewer
	var err error
	for {
		attempts++
		if nv, err = f.dialOnce(ctx); err == nil || permanent(err) || ctx.Err() != nil {
			break
		}
		if time.Since(start) > f.opts.MaxRetry {
			break
		}
		ok, cut := waitRetry(ctx, bo.NextBackOff(), f.moved)
		if !ok {
			err = ctx.Err()
			break
		}
		if cut {
			bo.Reset()
		}
	}
	if err != nil {
		return Switch{}, fmt.Errorf("reconnect after %s: %w", t.reason, err)
	}
	first := nv.FirstPacketAt()
	// The last packet of the old connection before the new one played.
	last := old.LastPacket()
	if last.After(first) {
		last = first
	}
	sw := Switch{Reason: t.reason, Triggered: t.at, LastBefore: last, FirstAfter: first, Attempts: attempts}
	if !last.IsZero() && first.After(last) {
		sw.Gap = first.Sub(last)
	}
	f.mu.Lock()
	f.cur = nv
	f.switches = append(f.switches, sw)
	f.mu.Unlock()
	f.watch(ctx, nv)
	// Break after make: the old connection goes only now.
	f.wg.Go(func() {
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = old.HangUp(hctx)
	})
	return sw, nil
}

// dialOnce makes one offer and waits for the new connection's first
// packet.
func (f *Follower) dialOnce(ctx context.Context) (*Viewer, error) {
	dctx, cancel := context.WithTimeout(ctx, f.opts.FirstPacketTimeout+5*time.Second)
	defer cancel()
	v, err := Dial(dctx, f.whepURL, f.token, f.opts.Viewer)
	if err != nil {
		return nil, err
	}
	select {
	case <-v.FirstPacket():
		return v, nil
	case <-time.After(f.opts.FirstPacketTimeout):
	case <-ctx.Done():
	}
	_ = v.HangUp(context.WithoutCancel(ctx))
	return nil, fmt.Errorf("no media on the new connection within %s", f.opts.FirstPacketTimeout)
}

// waitRetry waits d between two attempts; a signal on wake cuts it short
// (cut). ok is false when ctx ended.
func waitRetry(ctx context.Context, d time.Duration, wake <-chan struct{}) (ok, cut bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-wake:
		return true, true
	case <-t.C:
		return true, false
	}
}

// movedEvent is the part of an event the follower reads.
type movedEvent struct {
	Time time.Time `json:"time"`
}

// followEvents follows the session's events, resuming after the last one
// seen, and fires a reconnect on session.moved; it stops for good when the
// session ends or the token is refused.
func (f *Follower) followEvents(ctx context.Context) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 100*time.Millisecond, 5*time.Second
	lastID := ""
	for ctx.Err() == nil {
		var err error
		lastID, err = StreamEvents(ctx, f.opts.Viewer.Client, f.opts.EventsURL, f.token, lastID, func(e Event) {
			bo.Reset()
			switch e.Type {
			case ReasonMoved:
				var me movedEvent
				_ = json.Unmarshal(e.Data, &me)
				f.fire(trigger{reason: ReasonMoved, at: me.Time})
				select {
				case f.moved <- struct{}{}:
				default:
				}
			case "session.ended", "session.failed":
				f.mu.Lock()
				f.ended = true
				f.mu.Unlock()
			}
		})
		var se *StatusError
		if errors.As(err, &se) && se.Status < 500 && se.Status != http.StatusTooManyRequests {
			return
		}
		f.mu.Lock()
		ended := f.ended
		f.mu.Unlock()
		if ended {
			return
		}
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
