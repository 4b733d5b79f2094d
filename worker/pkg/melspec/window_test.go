package melspec

import (
	"testing"
	"time"
)

// TestWindowStartAt: the window of a model with look-ahead L ends at the
// frame's time + L: L = 200 ms is Wav2Lip's placement, 80 ms puts the
// frame's own mel frame at index 10.
func TestWindowStartAt(t *testing.T) {
	for _, c := range []struct {
		frame int
		ms    int
		want  int
	}{
		{0, 200, 0},
		{5, 200, 16},
		{7, 200, 22},
		{0, 80, -10},
		{5, 80, 6},
		{7, 80, 12},
		{7, 0, 6},
		{1, 0, -13},
		{10, 100, 24}, // 100 ms is exactly 8 mel frames
		{10, 106, 24}, // 8.48 mel frames rounds down
		{10, 107, 25}, // 8.56 rounds up
	} {
		if got := WindowStartAt(c.frame, time.Duration(c.ms)*time.Millisecond); got != c.want {
			t.Errorf("WindowStartAt(%d, %d ms) = %d, want %d", c.frame, c.ms, got, c.want)
		}
	}
}

// TestWindowFrom: frames before the floor, before 0 or past the end are
// Silence; the rest are copied in the model's layout.
func TestWindowFrom(t *testing.T) {
	mel := make([]Frame, 30)
	for k := range mel {
		for b := range Bands {
			mel[k][b] = float32(k) + float32(b)/100
		}
	}
	for _, c := range []struct {
		name         string
		start, floor int
	}{
		{"inside", 3, 0},
		{"before the start", -10, 0},
		{"past the end", 20, 0},
		{"floor", 3, 9},
		{"floor past the window", 3, 40},
	} {
		t.Run(c.name, func(t *testing.T) {
			var dst [WindowSize]float32
			WindowFrom(&dst, mel, c.start, c.floor)
			for i := range WindowFrames {
				k := c.start + i
				for b := range Bands {
					want := Silence
					if k >= 0 && k >= c.floor && k < len(mel) {
						want = mel[k][b]
					}
					if got := dst[b*WindowFrames+i]; got != want {
						t.Fatalf("frame %d band %d: %v, want %v", k, b, got, want)
					}
				}
			}
		})
	}
}
