package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// minioVersion is the MinIO server scripts/minio.sh builds.
const minioVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// minioBinary finds the server scripts/minio.sh built (or
// $AVATARFLEET_MINIO).
func minioBinary(t *testing.T) string {
	t.Helper()
	return repotest.Tool(t, "AVATARFLEET_MINIO", filepath.Join("minio", minioVersion, "minio"), "scripts/minio.sh")
}

// startMinIO runs a real MinIO server on a temporary directory, with the
// bucket "recordings", and returns a store on it (plain HTTP: minio-go
// signs each streamed chunk).
func startMinIO(t *testing.T, partSize uint64) *S3Store {
	t.Helper()
	const user, pass = "avatarfleet-test", "avatarfleet-test-secret"
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	var addr string
	for attempt := 1; ; attempt++ {
		var collided bool
		if addr, collided = runMinIO(t, user, pass, tr); !collided {
			break
		}
		if attempt == repotest.PortAttempts {
			t.Fatalf("MinIO: a port it was given was taken %d times", attempt)
		}
		t.Logf("MinIO: a port it was given was taken meanwhile; starting it again on fresh ports")
	}
	endpoint := "http://" + addr
	admin, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(user, pass, ""), Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.MakeBucket(ctx, "recordings", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	st, err := NewS3Store(ctx, S3Options{Endpoint: endpoint, Bucket: "recordings", Prefix: "fleet", AccessKey: user, SecretKey: pass, Transport: tr, PartSize: partSize})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewS3Store(ctx, S3Options{Endpoint: endpoint, Bucket: "absent", AccessKey: user, SecretKey: pass, Transport: tr}); err == nil {
		t.Fatal("NewS3Store accepted a bucket that does not exist")
	}
	t.Logf("MinIO %s at %s", minioVersion, fmt.Sprint(endpoint))
	return st
}

// TestS3ObjectParts writes an object of three 5 MiB parts through a real
// MinIO server: the first part, held until Commit, and the part being
// filled can be rewritten; an uploaded one cannot; the object reads back
// as written. An aborted upload leaves nothing behind.
func TestS3ObjectParts(t *testing.T) {
	const part = 5 << 20
	st := startMinIO(t, part)
	ctx := context.Background()
	obj, err := st.Create(ctx, "s1/big.webm")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 12<<20)
	for i := range want {
		want[i] = byte(i * 7 / 13)
	}
	for off := 0; off < len(want); off += 64 << 10 {
		if _, err := obj.Write(want[off : off+64<<10]); err != nil {
			t.Fatal(err)
		}
	}
	at := obj.(io.WriterAt)
	for _, off := range []int64{10, part - 2, 2*part + 100} { // the head, across its end, the current part
		patch := []byte("PATCHED")
		if off == part-2 {
			if _, err := at.WriteAt(patch, off); err == nil {
				t.Fatalf("a rewrite across the first part's end at %d was accepted", off)
			}
			continue
		}
		if _, err := at.WriteAt(patch, off); err != nil {
			t.Fatalf("WriteAt %d: %v", off, err)
		}
		copy(want[off:], patch)
	}
	if _, err := at.WriteAt([]byte("x"), part+10); err == nil {
		t.Fatal("a rewrite of the uploaded second part was accepted")
	}
	if _, _, err := st.Open(ctx, "s1/big.webm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open before Commit: %v, want ErrNotFound", err)
	}
	if err := obj.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, st, "s1/big.webm"); !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, differing from the %d written", len(got), len(want))
	}

	aborted, err := st.Create(ctx, "s1/aborted.webm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aborted.Write(want[:11<<20]); err != nil {
		t.Fatal(err)
	}
	aborted.Abort()
	if _, _, err := st.Open(ctx, "s1/aborted.webm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of an aborted object: %v, want ErrNotFound", err)
	}
	for u := range st.c.ListIncompleteUploads(ctx, st.opt.Bucket, "", true) {
		t.Errorf("incomplete upload left: %+v", u)
	}
}

// runMinIO starts MinIO on fresh ports and waits until it is ready. It
// returns its address, or collided when it exited because a port it was
// given was taken (FreePort's port is only free when picked).
func runMinIO(t *testing.T, user, pass string, tr *http.Transport) (addr string, collided bool) {
	t.Helper()
	addr = fmt.Sprintf("127.0.0.1:%d", repotest.FreePort(t, "tcp"))
	console := fmt.Sprintf("127.0.0.1:%d", repotest.FreePort(t, "tcp"))
	cmd := exec.Command(minioBinary(t), "server", "--quiet", "--address", addr, "--console-address", console, t.TempDir())
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+user, "MINIO_ROOT_PASSWORD="+pass, "MINIO_BROWSER=off",
		"MINIO_UPDATE=off", "HOME="+t.TempDir())
	out, err := os.Create(filepath.Join(t.TempDir(), "minio.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start MinIO: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = out.Close()
	})
	endpoint := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := (&http.Client{Transport: tr, Timeout: time.Second}).Get(endpoint + "/minio/health/ready")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, false
			}
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			log, _ := os.ReadFile(out.Name())
			if repotest.PortCollision(log) {
				return "", true
			}
			t.Fatalf("MinIO exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(out.Name())
			t.Fatalf("MinIO not ready at %s: %v\n%s", endpoint, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
