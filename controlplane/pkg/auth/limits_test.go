package auth

import "testing"

func TestParseLimits(t *testing.T) {
	defaults := Limits{MaxSessions: 7, Rate: 3, Burst: 6, MaxEventStreams: 2, MaxPendingViewers: 10, MaxPendingViewersPerToken: 5}
	const k1, k2 = "aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"
	tests := []struct {
		name    string
		yaml    string
		wantErr bool
		want    Limits // of k1
	}{
		{"old file, no limits: the defaults", "keys:\n- key: " + k1 + "\n  scopes: [sessions]\n", false, defaults},
		{"own limits over the defaults",
			"keys:\n- key: " + k1 + "\n  scopes: [sessions]\n  limits: {max_sessions: 3, rate: 0.5, burst: 1, max_event_streams: 1, max_pending_viewers: 4, max_pending_viewers_per_token: 2}\n",
			false, Limits{MaxSessions: 3, Rate: 0.5, Burst: 1, MaxEventStreams: 1, MaxPendingViewers: 4, MaxPendingViewersPerToken: 2}},
		{"explicit 0 is no limit",
			"keys:\n- key: " + k1 + "\n  scopes: [sessions]\n  limits: {max_sessions: 0}\n",
			false, Limits{MaxSessions: 0, Rate: 3, Burst: 6, MaxEventStreams: 2, MaxPendingViewers: 10, MaxPendingViewersPerToken: 5}},
		{"unknown limit", "keys:\n- key: " + k1 + "\n  scopes: [sessions]\n  limits: {max_session: 3}\n", true, Limits{}},
		{"negative limit", "keys:\n- key: " + k1 + "\n  scopes: [sessions]\n  limits: {rate: -1}\n", true, Limits{}},
		{"wrong type", "keys:\n- key: " + k1 + "\n  scopes: [sessions]\n  limits: {burst: many}\n", true, Limits{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := Parse([]byte(tt.yaml + "- key: " + k2 + "\n  scopes: [admin]\n"))
			if tt.wantErr {
				if err == nil {
					t.Fatal("parsed, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := ks.SetDefaults(defaults); err != nil {
				t.Fatal(err)
			}
			p, err := ks.Authenticate(k1)
			if err != nil {
				t.Fatal(err)
			}
			if p.Limits != tt.want {
				t.Errorf("limits %+v, want %+v", p.Limits, tt.want)
			}
			if got, err := ks.LimitsOf(Fingerprint(k1)); err != nil || got != tt.want {
				t.Errorf("LimitsOf = %+v, %v; want %+v", got, err, tt.want)
			}
			if p2, _ := ks.Authenticate(k2); p2.Limits != defaults {
				t.Errorf("other key's limits %+v, want the defaults %+v", p2.Limits, defaults)
			}
		})
	}
	var ks Keys
	if err := ks.SetDefaults(Limits{Burst: -1}); err == nil {
		t.Error("negative default accepted")
	}
	if _, err := ks.LimitsOf("nobody"); err == nil {
		t.Error("LimitsOf an unknown owner: no error")
	}
}
