package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
)

// levels records the level of each log record.
type levels struct {
	mu  sync.Mutex
	got []slog.Level
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, r.Level)
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

// TestRefusalLogLevels: a 503 no_capacity is expected under load and is
// logged below INFO, an outage 503 at INFO, a bug (500) at ERROR; 4xx
// are not logged.
func TestRefusalLogLevels(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		level  slog.Level
		logged bool
	}{
		{"no capacity", sessions.ErrNoCapacity, 503, slog.LevelDebug, true},
		{"room full", mapSignalingError(sessions.ErrRoomFull), 503, slog.LevelDebug, true},
		{"unavailable", sessions.ErrUnavailable, 503, slog.LevelInfo, true},
		{"bug", errors.New("boom"), 500, slog.LevelError, true},
		{"bad request", sessions.ErrInvalidInput, 400, 0, false},
		{"slow body", errBodyTimeout, 408, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &levels{}
			a := New(Options{Log: slog.New(h)})
			w := httptest.NewRecorder()
			a.fail(w, httptest.NewRequest(http.MethodPost, "/v1/sessions", nil), tt.err)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			switch {
			case !tt.logged && len(h.got) != 0:
				t.Fatalf("logged %v", h.got)
			case tt.logged && (len(h.got) != 1 || h.got[0] != tt.level):
				t.Fatalf("logged at %v, want once at %v", h.got, tt.level)
			}
		})
	}
}
