//go:build linux

package binfleet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// watchPoll is how often a Watcher reads its session.
const watchPoll = 50 * time.Millisecond

// Conn is one WHEP connection of a Watcher.
type Conn struct {
	// Worker is the session's worker when the connection was dialed.
	Worker string
	// Dialed is when the offer was sent; FirstFrame when its first picture
	// was decoded (zero until then).
	Dialed, FirstFrame time.Time
}

// Watcher is one viewer of a session that follows it across workers: a
// Pion WHEP viewer (whepviewer) that, when the session is ready on another
// worker than the one it dialed, or its pictures stop for StallAfter, hangs
// up and dials the same WHEP URL with the same viewer token again. It reads
// the session with the fleet's API key (GET /v1/sessions/{id}) every 50 ms,
// so what it measures does not depend on the event path.
type Watcher struct {
	f    *Fleet
	sess apiv1.Session

	life   context.Context // ends with Close
	cancel context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup // the first-picture waits

	mu      sync.Mutex
	cur     *whepviewer.Viewer
	conns   []Conn
	frames  int64 // pictures of connections already closed
	err     error
	changed chan struct{} // closed and replaced on every change of conns
}

// StallAfter is how long a Watcher's connection may go without a picture
// before it dials again.
const StallAfter = 3 * time.Second

// Watch dials the session and follows it until Close or the session's end.
func (f *Fleet) Watch(ctx context.Context, s apiv1.Session) (*Watcher, error) {
	w := &Watcher{f: f, sess: s, done: make(chan struct{}), changed: make(chan struct{})}
	w.life, w.cancel = context.WithCancel(context.Background())
	if err := w.dial(ctx, s.WorkerID); err != nil {
		w.cancel()
		w.wg.Wait()
		return nil, err
	}
	go w.follow(w.life)
	return w, nil
}

// dial connects a new viewer for the session's worker and, in the
// background, notes its first decoded picture.
func (w *Watcher) dial(ctx context.Context, worker string) error {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c := Conn{Worker: worker, Dialed: time.Now()}
	v, err := whepviewer.Dial(dctx, w.f.WHEPURL(w.sess), w.sess.ViewerToken, whepviewer.Options{})
	if err != nil {
		return fmt.Errorf("watch session %s on %s: %w", w.sess.ID, worker, err)
	}
	w.mu.Lock()
	old := w.cur
	if old != nil {
		w.frames += old.VideoFrames()
	}
	w.cur = v
	w.conns = append(w.conns, c)
	i := len(w.conns) - 1
	w.notifyLocked()
	w.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		fctx, cancel := context.WithTimeout(w.life, 60*time.Second)
		defer cancel()
		fr, err := v.WaitFirstFrame(fctx)
		if err != nil {
			return // closed, or no picture: the follow loop dials again
		}
		w.mu.Lock()
		w.conns[i].FirstFrame = fr.Decoded
		w.notifyLocked()
		w.mu.Unlock()
	}()
	return nil
}

func (w *Watcher) notifyLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// follow reads the session and dials again when it moved or the pictures
// stopped, until the session ends or ctx is done.
func (w *Watcher) follow(ctx context.Context) {
	defer close(w.done)
	tick := time.NewTicker(watchPoll)
	defer tick.Stop()
	lastFrames, lastAt := int64(-1), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s, err := w.f.GetSession(ctx, w.sess.ID)
		if err != nil {
			continue
		}
		if s.State == apiv1.StateEnded || s.State == apiv1.StateFailed {
			w.fail(fmt.Errorf("session %s %s (%s)", s.ID, s.State, s.EndReason))
			return
		}
		w.mu.Lock()
		worker, n := w.conns[len(w.conns)-1].Worker, w.cur.VideoFrames()
		w.mu.Unlock()
		if n != lastFrames {
			lastFrames, lastAt = n, time.Now()
		}
		stalled := time.Since(lastAt) > StallAfter
		if s.State != apiv1.StateReady || (s.WorkerID == worker && !stalled) {
			continue
		}
		if err := w.dial(ctx, s.WorkerID); err != nil {
			w.fail(err)
			continue // the session may not take viewers yet: try again
		}
		lastFrames, lastAt = -1, time.Now()
	}
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

// Err is the last error of following (a failed dial, the session's end).
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Conns are the connections so far, the current one last.
func (w *Watcher) Conns() []Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Conn(nil), w.conns...)
}

// Frames is the number of whole video frames received over every
// connection.
func (w *Watcher) Frames() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.frames + w.cur.VideoFrames()
}

// FirstFrameAfter waits for a connection dialed after t to decode its
// first picture and returns that connection.
func (w *Watcher) FirstFrameAfter(ctx context.Context, t time.Time) (Conn, error) {
	for {
		w.mu.Lock()
		for _, c := range w.conns {
			if c.Dialed.After(t) && !c.FirstFrame.IsZero() {
				w.mu.Unlock()
				return c, nil
			}
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Conn{}, fmt.Errorf("no picture over a connection made after %s (%d connections; last error: %v): %w",
				t.Format("15:04:05.000"), len(w.Conns()), w.Err(), ctx.Err())
		}
	}
}

// Close stops following and hangs up the current connection (WHEP DELETE).
func (w *Watcher) Close() error {
	w.cancel()
	<-w.done
	w.wg.Wait()
	w.mu.Lock()
	v := w.cur
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.HangUp(ctx); err != nil {
		return fmt.Errorf("watcher of session %s: %w", w.sess.ID, err)
	}
	return nil
}
