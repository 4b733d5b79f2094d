package fleetstore

import (
	"strings"
	"testing"
)

func TestParseKeys(t *testing.T) {
	k := NewKeys("/af")
	tests := []struct {
		key     string
		want    ParsedKey
		wantErr bool
	}{
		{k.Worker("w1"), ParsedKey{Kind: KindWorker, Worker: "w1"}, false},
		{k.Slot("w1", 3, 7), ParsedKey{Kind: KindSlot, Worker: "w1", GPU: 3, Slot: 7}, false},
		{k.Drain("w2"), ParsedKey{Kind: KindDrain, Worker: "w2"}, false},
		{k.Health("w3"), ParsedKey{Kind: KindHealth, Worker: "w3"}, false},
		{k.Fleet() + "other/x", ParsedKey{Kind: KindUnknown}, false},
		{k.Slots() + "w1/x/1", ParsedKey{}, true},
		{k.Slots() + "w1/1", ParsedKey{}, true},
		{"/elsewhere/fleet/workers/w1", ParsedKey{}, true},
	}
	for _, tt := range tests {
		got, err := k.Parse(tt.key)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, err=%v", tt.key, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"default": true, "w-1.gpu_0": true, "A": true,
		"": false, "-x": false, "a/b": false, "a b": false, "a>": false,
		strings.Repeat("x", 64): true, strings.Repeat("x", 65): false,
	} {
		if ValidName(name) != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, !want, want)
		}
	}
}
