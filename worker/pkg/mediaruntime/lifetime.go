package mediaruntime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/recording"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// Session lifetimes: the defaults of a session record whose
// idle_timeout_seconds or max_duration_seconds is 0 (README, "REST API"
// defaults), and how often they are checked.
const (
	DefaultIdleTimeout  = 120 * time.Second
	DefaultMaxDuration  = 4 * time.Hour
	LifetimeCheckPeriod = time.Second
)

// session is one running session.
type session struct {
	sess   *fleetv1.Session
	pl     atomic.Pointer[pipeline.Pipeline] // set once built; hooks read it
	media  Media
	cancel context.CancelFunc
	exited chan struct{}

	started     time.Time
	idle, limit time.Duration

	mu         sync.Mutex
	lastActive time.Time // last speech, or last moment a viewer was there
	viewers    int
	everViewed bool
	pcmFull    bool              // a PushPCM overflow was logged
	endReason  fleetv1.EndReason // set by MediaHooks.End
	endMessage string

	tee  *recording.Tee        // the pipeline's sink: the transport and the recordings
	recs []*recording.Recorder // running recordings, under mu
}

func (s *session) p() *pipeline.Pipeline { return s.pl.Load() }

// lifetimes reads the session record's limits.
func lifetimes(sess *fleetv1.Session) (idle, limit time.Duration) {
	idle, limit = DefaultIdleTimeout, DefaultMaxDuration
	if v := sess.GetIdleTimeoutSeconds(); v > 0 {
		idle = time.Duration(v) * time.Second
	}
	if v := sess.GetMaxDurationSeconds(); v > 0 {
		limit = time.Duration(v) * time.Second
	}
	return idle, limit
}

// touch records speech activity.
func (s *session) touch(now time.Time) {
	s.mu.Lock()
	if now.After(s.lastActive) {
		s.lastActive = now
	}
	s.mu.Unlock()
}

// hooks are the session's MediaHooks.
func (r *Runtime) hooks(s *session) MediaHooks {
	return MediaHooks{
		RequestKeyframe: func() {
			if p := s.p(); p != nil {
				p.RequestKeyframe()
			}
		},
		PushPCM: func(pcm []float32) {
			p := s.p()
			if p == nil {
				return
			}
			s.touch(r.now())
			err := p.PushPCM(pcm)
			if errors.Is(err, pipeline.ErrQueueFull) {
				s.mu.Lock()
				first := !s.pcmFull
				s.pcmFull = true
				s.mu.Unlock()
				if first {
					r.log.Warn("live audio dropped: speech queue full", "session", s.sess.GetId())
				}
			}
		},
		ViewersChanged: func(n int) {
			now := r.now()
			s.mu.Lock()
			defer s.mu.Unlock()
			if n > 0 {
				s.everViewed = true
			}
			if s.viewers > 0 || n > 0 {
				s.lastActive = now // the idle clock runs from the last viewer's leaving
			}
			s.viewers = max(n, 0)
		},
		PushSpeech: func(pcm []float32, sent func()) bool {
			p := s.p()
			if p == nil {
				return false
			}
			s.touch(r.now())
			return p.PushPCMMarked(pcm, sent) == nil
		},
		Interrupt: func() {
			if p := s.p(); p != nil {
				p.Interrupt()
			}
		},
		End: func(reason fleetv1.EndReason, message string) {
			if reason == fleetv1.EndReason_END_REASON_UNSPECIFIED {
				reason = fleetv1.EndReason_END_REASON_ERROR
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.endReason == fleetv1.EndReason_END_REASON_UNSPECIFIED {
				s.endReason, s.endMessage = reason, message
			}
		},
	}
}

// expired says why a session has reached the end of its life, if it has.
// now is the lifetime clock; speech in progress counts as activity.
func (s *session) expired(now time.Time) (fleetv1.EndReason, string) {
	s.mu.Lock()
	reason, msg := s.endReason, s.endMessage
	s.mu.Unlock()
	if reason != fleetv1.EndReason_END_REASON_UNSPECIFIED {
		return reason, msg // the transport ended it (MediaHooks.End)
	}
	if now.Sub(s.started) >= s.limit {
		return fleetv1.EndReason_END_REASON_MAX_DURATION, fmt.Sprintf("maximum duration %s reached", s.limit)
	}
	if p := s.p(); p != nil {
		if st := p.Status(); st.Speaking || st.Queued > 0 || st.Synthesizing {
			s.touch(now)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.viewers > 0 {
		s.lastActive = now
		return fleetv1.EndReason_END_REASON_UNSPECIFIED, ""
	}
	if now.Sub(s.lastActive) < s.idle {
		return fleetv1.EndReason_END_REASON_UNSPECIFIED, ""
	}
	if s.everViewed {
		return fleetv1.EndReason_END_REASON_VIEWER_GONE, fmt.Sprintf("every viewer left and no speech for %s", s.idle)
	}
	return fleetv1.EndReason_END_REASON_IDLE_TIMEOUT, fmt.Sprintf("no viewer and no speech for %s", s.idle)
}

// watchLifetimes ends the sessions whose time is up, every
// LifetimeCheckPeriod, until Close.
func (r *Runtime) watchLifetimes() {
	defer r.wg.Done()
	t := r.lifeClock.NewTicker(LifetimeCheckPeriod)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C():
			r.checkLifetimes()
			r.checkMemory()
		}
	}
}

// checkLifetimes runs one check: expired sessions are removed (their slot
// is free at once), their pipelines stopped, and each reported on Ended.
func (r *Runtime) checkLifetimes() {
	now := r.now()
	type end struct {
		s *session
		e runtime.Ended
	}
	var ends []end
	r.mu.Lock()
	for id, s := range r.sessions {
		reason, msg := s.expired(now)
		if reason == fleetv1.EndReason_END_REASON_UNSPECIFIED {
			continue
		}
		r.removeLocked(id)
		ends = append(ends, end{s, runtime.Ended{SessionID: id, State: fleetv1.SessionState_SESSION_STATE_ENDED, Reason: reason, Message: msg}})
	}
	r.mu.Unlock()
	for _, e := range ends {
		e.s.cancel()
		r.log.Info("session ended", "session", e.e.SessionID, "reason", e.e.Reason.String(), "why", e.e.Message)
		select {
		case r.ended <- e.e:
		case <-r.done:
			return
		}
	}
}
