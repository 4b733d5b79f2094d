package resample

import (
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// sliceReader hands out a slice in pieces of at most step samples.
type sliceReader struct {
	s    []float32
	step int
	max  int // the largest piece asked for
}

func (r *sliceReader) Read(dst []float32) (int, error) {
	r.max = max(r.max, len(dst))
	if len(r.s) == 0 {
		return 0, io.EOF
	}
	n := copy(dst[:min(len(dst), r.step)], r.s)
	r.s = r.s[n:]
	if len(r.s) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// TestReadAllMatchesResample checks that converting in chunks gives exactly
// the one-shot output for the rates speech comes in, whatever the pieces
// the source hands out, and that it reads no more than ChunkSize at once.
func TestReadAllMatchesResample(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 50_000)
	for i := range x {
		x[i] = float32(rng.Float64()*2 - 1)
	}
	for _, in := range []int{8000, 11025, 16000, 22050, 24000, 44100, 48000, 96000, 192000} {
		want, err := Resample(x, in, 16000)
		if err != nil {
			t.Fatal(err)
		}
		if n := OutLen(int64(len(x)), in, 16000); n != int64(len(want)) {
			t.Errorf("%d Hz: OutLen %d, Resample gives %d", in, n, len(want))
		}
		for _, step := range []int{1000, ChunkSize, 1 << 20} {
			src := &sliceReader{s: x, step: step}
			got, err := ReadAll(src, in, 16000, len(want), len(want))
			if err != nil {
				t.Fatalf("%d Hz step %d: %v", in, step, err)
			}
			if src.max > ChunkSize {
				t.Errorf("%d Hz: asked for %d samples at once", in, src.max)
			}
			if len(got) != len(want) {
				t.Fatalf("%d Hz step %d: %d samples, want %d", in, step, len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%d Hz step %d: sample %d = %v, want %v", in, step, i, got[i], want[i])
				}
			}
		}
	}
}

func TestReadAllLimits(t *testing.T) {
	x := make([]float32, 10_000)
	if _, err := ReadAll(&sliceReader{s: x, step: 512}, 8000, 16000, 19_999, 0); !errors.Is(err, ErrTooLong) {
		t.Errorf("one sample over the limit: %v, want ErrTooLong", err)
	}
	if y, err := ReadAll(&sliceReader{s: x, step: 512}, 8000, 16000, 20_000, 0); err != nil || len(y) != 20_000 {
		t.Errorf("exactly the limit: %d samples, %v", len(y), err)
	}
	boom := errors.New("boom")
	if _, err := ReadAll(errReader{boom}, 8000, 16000, 100, 0); !errors.Is(err, boom) {
		t.Errorf("source error: %v", err)
	}
	if _, err := ReadAll(&sliceReader{s: x, step: 512}, 0, 16000, 100, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("rate 0: %v", err)
	}
	for _, c := range []struct {
		n       int64
		in, out int
		want    int64
	}{{0, 8000, 16000, 0}, {1, 44100, 16000, 1}, {441, 44100, 16000, 160}, {442, 44100, 16000, 161}, {1 << 40, 8000, 16000, 1 << 41}} {
		if got := OutLen(c.n, c.in, c.out); got != c.want {
			t.Errorf("OutLen(%d, %d, %d) = %d, want %d", c.n, c.in, c.out, got, c.want)
		}
	}
}

type errReader struct{ err error }

func (r errReader) Read([]float32) (int, error) { return 0, r.err }
