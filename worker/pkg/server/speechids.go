package server

import "sync"

// Bounds on the speech ids a worker remembers.
const (
	maxSpeechIDsPerSession = 64   // the durable queue holds far fewer entries
	maxSpeechSessions      = 4096 // sessions remembered; the oldest go first
)

// acceptedSpeech remembers, per session, the speech ids of the texts this
// worker took, so that a text sent to it twice is spoken once: after a
// session moved here, the control plane replays its queue, and a Speak
// that raced with the move may send one of those texts again. A session
// starting here, or stopped, starts with none (an id it took during an
// earlier stay here is not spoken twice, but a text that came back
// unspoken must be).
type acceptedSpeech struct {
	mu    sync.Mutex
	ids   map[string][]string // session → ids taken, oldest first
	order []string            // sessions in the order first seen, for the bound
}

// claim records id for session and reports whether it was new. A text
// whose speaking then fails is given back with release.
func (a *acceptedSpeech) claim(session, id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ids == nil {
		a.ids = map[string][]string{}
	}
	ids, known := a.ids[session]
	for _, x := range ids {
		if x == id {
			return false
		}
	}
	if !known {
		a.order = append(a.order, session)
		a.evict()
	}
	if len(ids) == maxSpeechIDsPerSession {
		ids = append(ids[:0:0], ids[1:]...)
	}
	a.ids[session] = append(ids, id)
	return true
}

// evict drops the oldest sessions beyond the bound, and the names of
// sessions already forgotten.
func (a *acceptedSpeech) evict() {
	if len(a.order) <= maxSpeechSessions && len(a.order) <= 2*len(a.ids) {
		return
	}
	live := a.order[:0]
	for _, s := range a.order {
		if _, ok := a.ids[s]; ok {
			live = append(live, s)
		}
	}
	for len(live) > maxSpeechSessions {
		delete(a.ids, live[0])
		live = live[1:]
	}
	a.order = append([]string(nil), live...)
}

// release forgets one id of a session (its text was not taken after all).
func (a *acceptedSpeech) release(session, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := a.ids[session]
	for i, x := range ids {
		if x == id {
			a.ids[session] = append(ids[:i:i], ids[i+1:]...)
			return
		}
	}
}

// forget drops every id of a session.
func (a *acceptedSpeech) forget(session string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.ids, session)
}
