package main

import (
	"io"
	"strings"
	"testing"
)

// TestParseConfigSendBatching: --send-batching picks the SFU's send path;
// anything else is a usage error naming the flag.
func TestParseConfigSendBatching(t *testing.T) {
	for _, tc := range []struct {
		args              []string
		noBatching, noGSO bool
		err               bool
	}{
		{nil, false, false, false},
		{[]string{"--send-batching", "gso"}, false, false, false},
		{[]string{"--send-batching", "sendmmsg"}, false, true, false},
		{[]string{"--send-batching", "off"}, true, true, false},
		{[]string{"--send-batching", "fast"}, false, false, true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c, err := parseConfig(tc.args, env(nil), host("n"), io.Discard)
			if tc.err {
				if err == nil || !strings.Contains(err.Error(), "--send-batching") {
					t.Fatalf("err = %v, want a --send-batching usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.sfu.noBatching != tc.noBatching || c.sfu.noGSO != tc.noGSO {
				t.Errorf("noBatching %v noGSO %v, want %v %v", c.sfu.noBatching, c.sfu.noGSO, tc.noBatching, tc.noGSO)
			}
		})
	}
}
