package whepviewer

import (
	"context"
	"testing"
	"time"
)

// TestWaitRetryIsCutShortByAMove: the wait between reconnect attempts ends
// at once when a session.moved event wakes it, at its time otherwise, and
// reports a cancelled context.
func TestWaitRetryIsCutShortByAMove(t *testing.T) {
	wake := make(chan struct{}, 1)
	wake <- struct{}{}
	start := time.Now()
	if ok, cut := waitRetry(context.Background(), time.Hour, wake); !ok || !cut {
		t.Fatalf("woken: ok=%v cut=%v, want true true", ok, cut)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a woken wait took %v", d)
	}
	if ok, cut := waitRetry(context.Background(), time.Millisecond, wake); !ok || cut {
		t.Fatalf("timed out: ok=%v cut=%v, want true false", ok, cut)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, _ := waitRetry(ctx, time.Hour, wake); ok {
		t.Fatal("a cancelled wait reported ok")
	}
}
