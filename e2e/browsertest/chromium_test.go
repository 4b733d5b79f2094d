//go:build linux

package browsertest

import (
	"os"
	"os/exec"
	"testing"
)

// chromiumPath finds the browser: $AVATARFLEET_CHROMIUM, else Debian's
// chromium package (scripts/setup.sh installs it), else a Chrome.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("AVATARFLEET_CHROMIUM"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("AVATARFLEET_CHROMIUM=%q: %v", p, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: install Debian's chromium package (`scripts/setup.sh` or `make test` does; " +
		"by hand: apt-get install chromium), or point AVATARFLEET_CHROMIUM at a Chromium or Chrome binary")
	return ""
}
