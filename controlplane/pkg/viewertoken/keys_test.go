package viewertoken

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func b64(n int, fill byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(fill), n)))
}

func TestParseKeys(t *testing.T) {
	s32, t32 := b64(32, 'a'), b64(32, 'b')
	many := "keys:\n"
	for i := range MaxKeys + 1 {
		many += fmt.Sprintf("- id: k%d\n  secret: %s\n", i, b64(32, byte('A'+i%26))+"")
	}
	tests := []struct {
		name    string
		in      string
		ids     []string // nil: an error is expected
		errPart string
	}{
		{name: "one key", in: "keys:\n- id: k1\n  secret: " + s32 + "\n", ids: []string{"k1"}},
		{name: "first listed signs", in: "keys:\n- id: new\n  secret: " + s32 + "\n- id: old\n  secret: " + t32 + "\n", ids: []string{"new", "old"}},
		{name: "JSON", in: `{"keys":[{"id":"k.1_a-b","secret":"` + s32 + `"}]}`, ids: []string{"k.1_a-b"}},
		{name: "512-byte secret", in: "keys:\n- id: k\n  secret: " + b64(512, 'z') + "\n", ids: []string{"k"}},
		{name: "empty file", in: "", errPart: "no keys"},
		{name: "empty list", in: "keys: []\n", errPart: "no keys"},
		{name: "short secret", in: "keys:\n- id: k\n  secret: " + b64(31, 'a') + "\n", errPart: "31 bytes"},
		{name: "long secret", in: "keys:\n- id: k\n  secret: " + b64(513, 'a') + "\n", errPart: "513 bytes"},
		{name: "missing secret", in: "keys:\n- id: k\n", errPart: "0 bytes"},
		{name: "secret not base64", in: "keys:\n- id: k\n  secret: '" + strings.Repeat("!", 44) + "'\n", errPart: "base64"},
		{name: "secret URL base64", in: "keys:\n- id: k\n  secret: " + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("\xff", 32))) + "\n", errPart: "base64"},
		{name: "duplicate id", in: "keys:\n- id: k\n  secret: " + s32 + "\n- id: k\n  secret: " + t32 + "\n", errPart: "unique"},
		{name: "duplicate secret", in: "keys:\n- id: a\n  secret: " + s32 + "\n- id: b\n  secret: " + s32 + "\n", errPart: "same secret"},
		{name: "missing id", in: "keys:\n- secret: " + s32 + "\n", errPart: "id"},
		{name: "bad id", in: "keys:\n- id: 'a b'\n  secret: " + s32 + "\n", errPart: "must match"},
		{name: "id too long", in: "keys:\n- id: " + strings.Repeat("a", 65) + "\n  secret: " + s32 + "\n", errPart: "must match"},
		{name: "unknown field", in: "keys:\n- id: k\n  secret: " + s32 + "\n  created: 2026-01-01\n", errPart: "unknown field"},
		{name: "unknown top-level field", in: "signing: k\nkeys:\n- id: k\n  secret: " + s32 + "\n", errPart: "unknown field"},
		{name: "not YAML", in: "keys: [\n", errPart: "parse"},
		{name: "too many keys", in: many, errPart: "at most"},
		{name: "too large", in: "# " + strings.Repeat("x", MaxKeysFileSize) + "\nkeys:\n- id: k\n  secret: " + s32 + "\n", errPart: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := ParseKeys([]byte(tt.in))
			if tt.ids == nil {
				if err == nil {
					t.Fatalf("ParseKeys succeeded with %v", ks.IDs())
				}
				if !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("error %q does not say %q", err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ks.IDs(), tt.ids) || ks.Signing().ID != tt.ids[0] {
				t.Fatalf("ids %v signing %s, want %v", ks.IDs(), ks.Signing().ID, tt.ids)
			}
		})
	}
}

func TestMarshalKeysRoundTrip(t *testing.T) {
	a, _ := GenerateKey(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC))
	b, _ := GenerateKey(time.Now())
	if !strings.HasPrefix(a.ID, "k20261204-") || len(a.Secret) != 32 {
		t.Fatalf("generated %s with %d bytes", a.ID, len(a.Secret))
	}
	out, err := MarshalKeys(a, b)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := ParseKeys(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !slices.Equal(ks.IDs(), []string{a.ID, b.ID}) || string(ks.keys[1].Secret) != string(b.Secret) {
		t.Fatalf("round trip: %v", ks.IDs())
	}
}

func TestLoadOrCreateKeysFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "token-keys.yaml")
	ks, created, err := LoadOrCreateKeysFile(path)
	if err != nil || !created {
		t.Fatalf("first start: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	again, created, err := LoadOrCreateKeysFile(path)
	if err != nil || created {
		t.Fatalf("restart: created=%v err=%v", created, err)
	}
	if !slices.Equal(again.IDs(), ks.IDs()) || string(again.Signing().Secret) != string(ks.Signing().Secret) {
		t.Fatal("restart did not reuse the key")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("data dir holds %d entries, want only the keys file", len(entries))
	}

	// Processes starting together agree on one key.
	path2 := filepath.Join(t.TempDir(), "token-keys.yaml")
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Go(func() {
			ks, _, err := LoadOrCreateKeysFile(path2)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = ks.Signing().ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("racing starts made different keys: %v", ids)
		}
	}

	// A broken file is an error, not replaced.
	bad := filepath.Join(t.TempDir(), "token-keys.yaml")
	if err := os.WriteFile(bad, []byte("keys: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKeysFile(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("broken file: %v", err)
	}
}

func TestLoadKeysFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeysFile(path); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("1 MiB file: %v", err)
	}
	if _, err := LoadKeysFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// FuzzParseKeys: any input either fails or yields a set that satisfies
// every documented limit and survives a round trip.
func FuzzParseKeys(f *testing.F) {
	f.Add([]byte("keys:\n- id: k1\n  secret: " + b64(32, 'a') + "\n"))
	f.Add([]byte(`{"keys":[{"id":"a","secret":"` + b64(40, 'b') + `"},{"id":"b","secret":"` + b64(32, 'c') + `"}]}`))
	f.Add([]byte("keys:\n- id: k\n  secret: !!binary AAAA\n"))
	f.Add([]byte("keys: &a [*a]\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		ks, err := ParseKeys(in)
		if err != nil {
			return
		}
		if len(ks.keys) == 0 || len(ks.keys) > MaxKeys {
			t.Fatalf("%d keys", len(ks.keys))
		}
		seen := map[string]bool{}
		for _, k := range ks.keys {
			if !keyIDPattern.MatchString(k.ID) || seen[k.ID] || len(k.Secret) < MinSecretLen || len(k.Secret) > MaxSecretLen {
				t.Fatalf("accepted key %q with %d bytes", k.ID, len(k.Secret))
			}
			seen[k.ID] = true
		}
		out, err := MarshalKeys(ks.keys...)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseKeys(out)
		if err != nil || !slices.Equal(back.IDs(), ks.IDs()) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
