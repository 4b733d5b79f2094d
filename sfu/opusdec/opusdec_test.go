package opusdec

import (
	"math"
	"testing"

	"gopkg.in/hraban/opus.v2"
)

// encodeTone returns n 20 ms Opus packets of a 48 kHz sine at freq Hz.
func encodeTone(t *testing.T, freq float64, n int, fec bool) [][]byte {
	t.Helper()
	enc, err := opus.NewEncoder(48000, 1, opus.AppVoIP)
	if err != nil {
		t.Fatal(err)
	}
	if fec {
		if err := enc.SetInBandFEC(true); err != nil {
			t.Fatal(err)
		}
		if err := enc.SetPacketLossPerc(20); err != nil {
			t.Fatal(err)
		}
	}
	var out [][]byte
	pcm := make([]float32, 960)
	for p := 0; p < n; p++ {
		for i := range pcm {
			pcm[i] = float32(0.5 * math.Sin(2*math.Pi*freq*float64(p*960+i)/48000))
		}
		buf := make([]byte, 1500)
		m, err := enc.EncodeFloat32(pcm, buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:m])
	}
	return out
}

func TestDecodeConcealsLoss(t *testing.T) {
	pkts := encodeTone(t, 440, 50, true)
	d, err := New(16000)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]float32
	emit := func(pcm []float32) { frames = append(frames, pcm) }
	seq := uint16(65530) // wraps
	for i, p := range pkts {
		s := seq + uint16(i)
		switch {
		case i == 10, i == 20, i == 21, i == 22: // lost
			continue
		case i == 30: // late duplicate of 29 after 30
			if err := d.Decode(s, p, emit); err != nil {
				t.Fatal(err)
			}
			if err := d.Decode(s-1, pkts[i-1], emit); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := d.Decode(s, p, emit); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
	if len(frames) != 50 {
		t.Fatalf("got %d frames, want 50 (46 decoded + 4 concealed)", len(frames))
	}
	for i, f := range frames {
		if len(f) != 320 {
			t.Fatalf("frame %d has %d samples, want 320 (20 ms at 16 kHz)", i, len(f))
		}
	}
	if d.Concealed != 4 || d.Dropped != 1 {
		t.Fatalf("concealed %d dropped %d, want 4 and 1", d.Concealed, d.Dropped)
	}
}

func TestDecodeGarbage(t *testing.T) {
	d, err := New(16000)
	if err != nil {
		t.Fatal(err)
	}
	emit := func([]float32) {}
	if err := d.Decode(1, nil, emit); err == nil {
		t.Fatal("empty payload decoded")
	}
	// Whatever libopus makes of these bytes, it must not crash.
	_ = d.Decode(2, []byte{0xff, 0xff, 0xff, 0xff, 0x01}, emit)
	_ = d.Decode(3, []byte{0x0b}, emit)
}
