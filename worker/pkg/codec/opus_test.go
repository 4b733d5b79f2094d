package codec

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"gopkg.in/hraban/opus.v2"
)

func newOpus(t testing.TB, opts OpusOptions) *OpusEncoder {
	t.Helper()
	e, err := NewOpusEncoder(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// tone is n samples per channel of a freq Hz sine of amplitude amp at 48 kHz,
// interleaved over channels.
func tone(freq, amp float64, n, channels int) []float32 {
	x := make([]float32, n*channels)
	for i := 0; i < n; i++ {
		v := float32(amp * math.Sin(2*math.Pi*freq*float64(i)/OpusSampleRate))
		for c := 0; c < channels; c++ {
			x[i*channels+c] = v
		}
	}
	return x
}

// dftAmp is the amplitude of the freq Hz component of channel ch of the
// interleaved x, by a direct DFT: 2·|Σ x·e^{−2πi·f·n/rate}|/N.
func dftAmp(x []int16, ch, channels int, freq float64) float64 {
	var re, im float64
	n := len(x) / channels
	for i := 0; i < n; i++ {
		v := float64(x[i*channels+ch]) / 32768
		ph := 2 * math.Pi * freq * float64(i) / OpusSampleRate
		re += v * math.Cos(ph)
		im -= v * math.Sin(ph)
	}
	return 2 * math.Hypot(re, im) / float64(n)
}

func rms16(x []int16) float64 {
	var s float64
	for _, v := range x {
		f := float64(v) / 32768
		s += f * f
	}
	return math.Sqrt(s / float64(len(x)))
}

// One second of a 440 Hz tone in 20 ms frames: 50 packets, each decoding to
// 960 samples per channel, with the tone's amplitude kept within 1 dB and
// the coding noise 15 dB below it.
func TestOpusTone(t *testing.T) {
	for _, channels := range []int{1, 2} {
		const amp = 0.5
		e := newOpus(t, OpusOptions{Channels: channels})
		d, err := opus.NewDecoder(OpusSampleRate, channels)
		if err != nil {
			t.Fatal(err)
		}
		in := tone(440, amp, OpusSampleRate, channels)
		var out []int16
		pcm := make([]int16, OpusFrameSamples*channels)
		step := OpusFrameSamples * channels
		for k := 0; k < 50; k++ {
			var pkt []byte
			if k%2 == 0 {
				pkt, err = e.EncodeFloat32(in[k*step : (k+1)*step])
			} else { // the int16 path, same signal
				s16 := make([]int16, step)
				for i, v := range in[k*step : (k+1)*step] {
					s16[i] = int16(v * 32767)
				}
				pkt, err = e.EncodeInt16(s16)
			}
			if err != nil {
				t.Fatalf("%d ch frame %d: %v", channels, k, err)
			}
			if len(pkt) == 0 {
				t.Fatalf("%d ch frame %d: empty packet", channels, k)
			}
			n, err := d.Decode(pkt, pcm)
			if err != nil {
				t.Fatalf("%d ch frame %d: decode: %v", channels, k, err)
			}
			if n != OpusFrameSamples {
				t.Fatalf("%d ch frame %d: decoded %d samples, want %d", channels, k, n, OpusFrameSamples)
			}
			out = append(out, pcm...)
		}
		// Skip the first 100 ms (codec delay and warm-up); 0.5 s from there
		// holds whole cycles of 440 Hz.
		seg := out[4800*channels : 28800*channels]
		for ch := 0; ch < channels; ch++ {
			got := dftAmp(seg, ch, channels, 440)
			db := 20 * math.Log10(got/amp)
			t.Logf("%d ch, channel %d: 440 Hz amplitude %.3f (%.2f dB)", channels, ch, got, db)
			if math.Abs(db) > 1 {
				t.Errorf("%d ch, channel %d: tone amplitude %.3f, want %.3f ± 1 dB", channels, ch, got, amp)
			}
		}
		// Everything but the tone (whose RMS is amp/√2) is coding noise.
		total, toneRMS := rms16(seg), amp/math.Sqrt2
		rest := math.Sqrt(max(0, total*total-toneRMS*toneRMS))
		snr := 20 * math.Log10(toneRMS/rest)
		t.Logf("%d ch: tone to residual %.1f dB", channels, snr)
		if snr < 15 {
			t.Errorf("%d ch: tone to residual %.1f dB, want > 15", channels, snr)
		}
	}
}

func TestOpusBitrate(t *testing.T) {
	size := func(bps int) int {
		e := newOpus(t, OpusOptions{Bitrate: bps})
		n := 0
		noise := uint32(1)
		pcm := make([]float32, OpusFrameSamples)
		for k := 0; k < 25; k++ {
			for i := range pcm { // white noise: the encoder spends what it may
				noise = noise*1664525 + 1013904223
				pcm[i] = float32(int32(noise)) / (1 << 32)
			}
			pkt, err := e.EncodeFloat32(pcm)
			if err != nil {
				t.Fatal(err)
			}
			n += len(pkt)
		}
		return n * 8 * 2 // 25 frames = 0.5 s
	}
	lo, hi := size(16_000), size(64_000)
	t.Logf("noise at 16 kbit/s: %d bit/s; at 64 kbit/s: %d bit/s", lo, hi)
	if lo > 24_000 || hi < 40_000 {
		t.Errorf("bitrates %d and %d do not follow the targets 16000 and 64000", lo, hi)
	}
}

func TestOpusErrors(t *testing.T) {
	for _, o := range []OpusOptions{{Channels: 3}, {Channels: -1}, {Bitrate: 100}, {Bitrate: 600_000}, {Complexity: -1}, {Complexity: 11}} {
		if e, err := NewOpusEncoder(o); err == nil {
			_ = e.Close()
			t.Errorf("%+v accepted", o)
		}
	}
	e := newOpus(t, OpusOptions{Channels: 2})
	if e.Channels() != 2 {
		t.Errorf("channels %d", e.Channels())
	}
	if _, err := e.EncodeFloat32(make([]float32, OpusFrameSamples)); err == nil {
		t.Error("mono frame accepted by a stereo encoder")
	}
	if _, err := e.EncodeInt16(nil); err == nil {
		t.Error("empty frame accepted")
	}
	if err := e.SetBitrate(5); err == nil {
		t.Error("bitrate 5 accepted")
	}
	if err := e.SetBitrate(48_000); err != nil {
		t.Error(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := e.EncodeFloat32(make([]float32, 2*OpusFrameSamples)); !errors.Is(err, ErrClosed) {
		t.Errorf("encode after close: %v", err)
	}
	if err := e.SetBitrate(48_000); !errors.Is(err, ErrClosed) {
		t.Errorf("set bitrate after close: %v", err)
	}
}

func BenchmarkOpusEncode20ms(b *testing.B) {
	for _, channels := range []int{1, 2} {
		b.Run(map[int]string{1: "mono", 2: "stereo"}[channels], func(b *testing.B) {
			e := newOpus(b, OpusOptions{Channels: channels})
			pcm := tone(440, 0.5, 48000, channels)
			step := OpusFrameSamples * channels
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := e.EncodeFloat32(pcm[i*step : (i+1)*step]); err != nil {
					b.Fatal(err)
				}
				i = (i + 1) % 50
			}
		})
	}
}

// Digital silence is encoded until the encoder settles on one packet, then
// that packet is repeated without encoding; sound after it is encoded again
// and decodes as before.
func TestOpusSilence(t *testing.T) {
	e := newOpus(t, OpusOptions{})
	zero := make([]float32, OpusFrameSamples)
	var pkts [][]byte
	for range 50 {
		pkt, err := e.EncodeFloat32(zero)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, pkt)
	}
	if e.silentRun < silenceSteady {
		t.Fatalf("silence never settled: run %d", e.silentRun)
	}
	last := pkts[len(pkts)-1]
	for i := len(pkts) - 10; i < len(pkts); i++ {
		if !bytes.Equal(pkts[i], last) {
			t.Fatalf("silent packet %d differs", i)
		}
	}
	pkts[len(pkts)-1][0] ^= 0xff // the caller's to keep: not the cached one
	again, _ := e.EncodeFloat32(zero)
	if !bytes.Equal(again, pkts[len(pkts)-2]) {
		t.Fatal("cached silent packet was modified through a returned one")
	}
	pcm := tone(440, 0.5, OpusFrameSamples, 1)
	pkt, err := e.EncodeFloat32(pcm)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(pkt, again) || e.silentRun != 0 {
		t.Fatal("a tone after silence came out as the silent packet")
	}
}

// The complexity asked for (DefaultOpusComplexity when none is) is the one
// libopus runs at, read back from the encoder.
func TestOpusComplexity(t *testing.T) {
	for _, tc := range []struct{ ask, want int }{{0, DefaultOpusComplexity}, {1, 1}, {5, 5}, {10, 10}} {
		e := newOpus(t, OpusOptions{Complexity: tc.ask})
		got, err := opusComplexity(e.rc)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("complexity %d: libopus runs at %d, want %d", tc.ask, got, tc.want)
		}
	}
}

// Digital silence is encoded at complexity 10, where libopus settles on one
// packet; sound after it goes back to the complexity asked for.
func TestOpusSilenceComplexity(t *testing.T) {
	e := newOpus(t, OpusOptions{Complexity: 3, SampleRate: 16000})
	cx := func() int {
		c, err := opusComplexity(e.rc)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	zero := make([]float32, OpusFrameSamplesAt(16000))
	for range 20 {
		if _, err := e.EncodeFloat32(zero); err != nil {
			t.Fatal(err)
		}
	}
	if e.silentRun < silenceSteady || cx() != 10 {
		t.Fatalf("silence: run %d at complexity %d, want settled at 10", e.silentRun, cx())
	}
	if _, err := e.EncodeFloat32(tone(440, 0.5, 16000, 1)[:len(zero)]); err != nil {
		t.Fatal(err)
	}
	if got := cx(); got != 3 {
		t.Errorf("sound after silence at complexity %d, want 3", got)
	}
}
