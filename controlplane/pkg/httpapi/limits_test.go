package httpapi

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
)

func TestKeyLimiterRate(t *testing.T) {
	k := newKeyLimiter()
	p := auth.Principal{Owner: "o1", Limits: auth.Limits{Rate: 0.5, Burst: 2}}
	now := time.Unix(1000, 0)
	for i := range 2 {
		if err := k.allow(p, now); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	err := k.allow(p, now)
	var ae *apiError
	if !errors.As(err, &ae) || ae.status != http.StatusTooManyRequests || ae.code != apiv1.CodeRateLimited || ae.retryAfter != 2*time.Second {
		t.Fatalf("past the burst: %v, want 429 rate_limited with a 2 s wait", err)
	}
	// The refused request took no token: one is back 2 s later.
	if err := k.allow(p, now.Add(2*time.Second)); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
	// Another key and a key without a rate are not limited by it.
	if err := k.allow(auth.Principal{Owner: "o2", Limits: auth.Limits{Rate: 0.5, Burst: 2}}, now); err != nil {
		t.Fatalf("another key: %v", err)
	}
	for range 100 {
		if err := k.allow(auth.Principal{Owner: "o3"}, now); err != nil {
			t.Fatalf("unlimited key: %v", err)
		}
	}
	// A rate without a burst allows about one second's worth at once.
	q := auth.Principal{Owner: "o4", Limits: auth.Limits{Rate: 3}}
	for i := range 3 {
		if err := k.allow(q, now); err != nil {
			t.Fatalf("request %d of an implied burst of 3: %v", i, err)
		}
	}
	if err := k.allow(q, now); err == nil {
		t.Fatal("4th request at rate 3 with no burst allowed")
	}
}

func TestKeyLimiterStreams(t *testing.T) {
	k := newKeyLimiter()
	p := auth.Principal{Owner: "o1", Limits: auth.Limits{MaxEventStreams: 2}}
	r1, err := k.openStream(p)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := k.openStream(p)
	if err != nil {
		t.Fatal(err)
	}
	var ae *apiError
	if _, err := k.openStream(p); !errors.As(err, &ae) || ae.code != apiv1.CodeQuotaExceeded || ae.status != http.StatusTooManyRequests {
		t.Fatalf("third stream: %v, want 429 quota_exceeded", err)
	}
	r1()
	r1() // releasing twice frees one place only
	r3, err := k.openStream(p)
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := k.openStream(p); err == nil {
		t.Fatal("a double release freed two places")
	}
	r2()
	r3()
	if len(k.streams) != 0 {
		t.Fatalf("stream counts left: %v", k.streams)
	}
}

func TestPageToken(t *testing.T) {
	for _, id := range []string{"sess_0123", "a", "x-y_z"} {
		got, ok := decodePageToken(encodePageToken(id))
		if !ok || got != id {
			t.Errorf("round trip of %q: %q, %v", id, got, ok)
		}
	}
	for _, bad := range []string{"", "!!", "c2Vzcw", encodePageToken("a/b"), encodePageToken("")} {
		if _, ok := decodePageToken(bad); ok {
			t.Errorf("token %q accepted", bad)
		}
	}
}
