package images_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/deploy/images"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// sandbox is an image's extracted layers mounted as a container runtime
// would with a read-only root: a read-only overlay of the layers, tmpfs
// volumes at /tmp and the data directory, /proc, and a /dev with the usual
// character devices. Everything is unmounted in t.Cleanup.
type sandbox struct {
	root string
	env  []string
}

// A non-empty data is a host directory bound at the data directory (shared
// by two sandboxes) instead of a tmpfs.
func mountSandbox(t *testing.T, layers []string, env []string, data string) *sandbox {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("running an image's root filesystem needs root (chroot and mounts); CI runs `make test` as root")
	}
	var mounted []string
	t.Cleanup(func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			if err := syscall.Unmount(mounted[i], 0); err != nil {
				if err := syscall.Unmount(mounted[i], syscall.MNT_DETACH); err != nil {
					t.Errorf("unmount %s: %v", mounted[i], err)
				}
			}
		}
	})
	mount := func(src, target, fstype string, flags uintptr, data string) {
		t.Helper()
		if err := syscall.Mount(src, target, fstype, flags, data); err != nil {
			t.Fatalf("mount %s on %s: %v", src, target, err)
		}
		mounted = append(mounted, target)
	}
	root := t.TempDir() // its removal is registered first, so it runs after the unmounts
	lower := slices.Clone(layers)
	slices.Reverse(lower) // overlayfs lists the top layer first
	if err := syscall.Mount("overlay", root, "overlay", syscall.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")); err != nil {
		t.Fatalf("mount the image's layers (overlayfs, read-only) on %s: %v", root, err)
	}
	mounted = append(mounted, root)
	mount("tmpfs", filepath.Join(root, "tmp"), "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=1777,size=64m")
	// The embedded default's JetStream wants room for its 1 GiB events
	// stream (a tmpfs only takes the pages written).
	if data == "" {
		mount("tmpfs", filepath.Join(root, images.DataDir), "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV,
			fmt.Sprintf("mode=0700,uid=%d,gid=%d,size=2g", images.UID, images.UID))
	} else {
		mount(data, filepath.Join(root, images.DataDir), "", syscall.MS_BIND, "")
	}
	mount("proc", filepath.Join(root, "proc"), "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "")
	dev := filepath.Join(root, "dev")
	mount("tmpfs", dev, "tmpfs", syscall.MS_NOSUID, "mode=0755,size=1m")
	for _, d := range []string{"null", "zero", "random", "urandom"} {
		p := filepath.Join(dev, d)
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			t.Fatal(err)
		}
		mount("/dev/"+d, p, "", syscall.MS_BIND, "")
	}
	return &sandbox{root: root, env: env}
}

// command runs argv inside the sandbox as the image's user.
func (s *sandbox) command(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = s.env
	cmd.Dir = images.DataDir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     s.root,
		Credential: &syscall.Credential{Uid: images.UID, Gid: images.UID, Groups: []uint32{}},
		Setpgid:    true,
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// ldd runs the root filesystem's own ldd on file and returns the libraries
// it could not find.
func (s *sandbox) ldd(t *testing.T, file string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.command(ctx, "/usr/bin/ldd", file).CombinedOutput()
	if err != nil {
		t.Fatalf("ldd %s in the image: %v\n%s", file, err, out)
	}
	var missing []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "not found") {
			missing = append(missing, strings.Fields(line)[0])
		}
	}
	if !strings.Contains(string(out), "libc.so.6 => /") {
		t.Fatalf("ldd %s: no libc resolved in the image:\n%s", file, out)
	}
	return missing
}

// freePort is a TCP port free on loopback now.
func freePort(t *testing.T) int { return repotest.FreePort(t, "tcp") }

// tail is the last n bytes of b, for failure messages.
func tail(b *bytes.Buffer, n int) string {
	s := b.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
