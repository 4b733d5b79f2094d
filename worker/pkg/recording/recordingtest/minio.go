// Package recordingtest runs a real MinIO server for tests of S3
// recording stores: the server scripts/minio.sh builds from the module
// proxy (or $AVATARFLEET_MINIO), on a temporary directory, with one bucket.
package recordingtest

import (
	"context"
	"fmt"
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

// MinIOVersion is the MinIO server scripts/minio.sh builds.
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Credentials of the test server (its root user).
const (
	AccessKey = "avatarfleet-test"
	SecretKey = "avatarfleet-test-secret"
)

// MinIO is a running server.
type MinIO struct {
	// Endpoint is its URL (plain HTTP on loopback: minio-go signs each
	// streamed chunk).
	Endpoint string
	// Bucket exists, empty, when StartMinIO returns.
	Bucket string
	// Transport is the HTTP transport the test's clients should share
	// (closed with the test).
	Transport *http.Transport
}

// Binary finds the server scripts/minio.sh built; a missing one fails the
// test with what to run.
func Binary(t testing.TB) string {
	t.Helper()
	return repotest.Tool(t, "AVATARFLEET_MINIO", filepath.Join("minio", MinIOVersion, "minio"), "scripts/minio.sh")
}

// StartMinIO runs a MinIO server until the test ends, with the bucket
// "recordings", and waits until it is ready. When a port it was given is
// taken before it binds it, it starts again on fresh ports.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	var addr string
	repotest.StartServer(t, repotest.ServerOptions{
		Name: "MinIO",
		Command: func() (*exec.Cmd, func() bool) {
			addr = fmt.Sprintf("127.0.0.1:%d", repotest.FreePort(t, "tcp"))
			console := fmt.Sprintf("127.0.0.1:%d", repotest.FreePort(t, "tcp"))
			cmd := exec.Command(Binary(t), "server", "--quiet", "--address", addr, "--console-address", console, t.TempDir())
			cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey, "MINIO_BROWSER=off",
				"MINIO_UPDATE=off", "HOME="+t.TempDir())
			url := "http://" + addr + "/minio/health/ready"
			return cmd, func() bool {
				resp, err := (&http.Client{Transport: tr, Timeout: time.Second}).Get(url)
				if err != nil {
					return false
				}
				_ = resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}
		},
	})
	admin, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const bucket = "recordings"
	if err := admin.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	m := &MinIO{Endpoint: "http://" + addr, Bucket: bucket, Transport: tr}
	t.Logf("MinIO %s at %s", MinIOVersion, m.Endpoint)
	return m
}
