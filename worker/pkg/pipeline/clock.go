package pipeline

import "time"

// Clock makes the tickers that pace the media clock. The real clock is
// time.NewTicker; tests inject a manual one to run faster than real time.
type Clock interface {
	// NewTicker returns a ticker that fires every d.
	NewTicker(d time.Duration) Ticker
}

// Ticker is a source of ticks; time.Ticker's shape.
type Ticker interface {
	// C delivers the ticks. The value is informational only: the media
	// clock counts ticks, it never reads wall-clock time.
	C() <-chan time.Time
	// Stop ends the ticks.
	Stop()
}

// RealClock is the wall clock.
type RealClock struct{}

// NewTicker implements Clock with time.NewTicker.
func (RealClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// ManualClock is a Clock whose one ticker fires when Tick is called, for
// tests and offline rendering. NewTicker may be called once per pipeline;
// every ticker it returns shares the same channel.
type ManualClock struct {
	ch chan time.Time
}

// NewManualClock returns a ManualClock.
func NewManualClock() *ManualClock { return &ManualClock{ch: make(chan time.Time)} }

// NewTicker implements Clock.
func (m *ManualClock) NewTicker(time.Duration) Ticker { return manualTicker{m.ch} }

// Ticks is the channel a test sends ticks on; a send returns once the
// pipeline has taken the tick (it has finished the previous one).
func (m *ManualClock) Ticks() chan<- time.Time { return m.ch }

type manualTicker struct{ ch chan time.Time }

func (m manualTicker) C() <-chan time.Time { return m.ch }
func (m manualTicker) Stop()               {}
