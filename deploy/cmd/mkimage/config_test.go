package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, f := range []string{"usr/bin/ldd", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "usr/bin/espeak-ng", "bin/controlplane", "bin/avatarctl"} {
		p := filepath.Join(rootfs, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ok := []string{"-rootfs", rootfs, "-bin", filepath.Join(rootfs, "bin"), "-targets", "controlplane",
		"-created-epoch", "1767225600", "-version", "v1", "-revision", "unknown", "-out", filepath.Join(dir, "out")}
	c, err := ParseConfig(ok, io.Discard)
	if err != nil {
		t.Fatalf("valid flags refused: %v", err)
	}
	if o, _ := c.Options(); o.Created.Unix() != 1767225600 || len(o.Targets) != 1 {
		t.Errorf("options %+v", o)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-created-epoch", "-1"}, "--created-epoch"},
		{[]string{"-version", "a b"}, "--version"},
		{[]string{"-revision", "main"}, "--revision"},
		{[]string{"-targets", "controlplane,nope"}, "--targets"},
		{[]string{"-rootfs", dir}, "--rootfs"},
		{[]string{"-targets", "worker-cpu"}, "--bin"},
		{[]string{"-source", "ftp://x"}, "--source"},
	} {
		args := append(append([]string{}, ok...), tc.args...)
		if _, err := ParseConfig(args, io.Discard); err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	if _, err := ParseConfig(append(ok, "extra"), io.Discard); err == nil {
		t.Error("a stray argument was accepted")
	}
}
