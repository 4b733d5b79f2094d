// Package repotest finds what tests need from the repository they run in:
// its root (the folder holding go.work) and the tools scripts/setup.sh
// installs under .tools/. Every module's tests share it, so the walk up to
// the root is written once.
package repotest

import (
	"os"
	"path/filepath"
	"testing"
)

// Root is the folder holding go.work, above the test's directory.
func Root(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			tb.Fatalf("no go.work above %s: run the test inside the repository", dir)
		}
	}
}

// Tool is a program the set-up built: the path in the environment
// variable env if it is set, else .tools/<rel> of the repository. A missing
// program fails the test, naming the script that makes it.
func Tool(tb testing.TB, env, rel, script string) string {
	tb.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	bin := filepath.Join(Root(tb), ".tools", rel)
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("%s: %v (run %s, or scripts/setup.sh; or set %s)", filepath.Base(rel), err, script, env)
	}
	return bin
}
