package recording

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/recording/recordingtest"
)

// startMinIO runs a real MinIO server (recordingtest) and returns a store
// on its bucket.
func startMinIO(t *testing.T, partSize uint64) *S3Store {
	t.Helper()
	m := recordingtest.StartMinIO(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opt := S3Options{Endpoint: m.Endpoint, Bucket: m.Bucket, Prefix: "fleet", AccessKey: recordingtest.AccessKey,
		SecretKey: recordingtest.SecretKey, Transport: m.Transport, PartSize: partSize}
	st, err := NewS3Store(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	opt.Bucket = "absent"
	if _, err := NewS3Store(ctx, opt); err == nil {
		t.Fatal("NewS3Store accepted a bucket that does not exist")
	}
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
