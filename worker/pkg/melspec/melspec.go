// Package melspec computes the Wav2Lip mel spectrogram (README, "Media contract"),
// in one go or incrementally as audio arrives, and cuts the per-video-frame
// windows the lip-sync model takes.
//
// # Parameters
//
// They are Wav2Lip's hparams.py and audio.py, fixed:
//
//   - 16 kHz mono input (resample first, see package resample).
//   - Pre-emphasis y[n] = x[n] − 0.97·x[n−1], with x[−1] = 0
//     (scipy.signal.lfilter([1, −0.97], [1], x)).
//   - STFT as librosa.stft(y, n_fft=800, hop_length=200, win_length=800):
//     periodic Hann window w[n] = 0.5 − 0.5·cos(2πn/800) (scipy
//     get_window('hann', 800, fftbins=True)), center=True. Centering pads 400
//     samples on each side in "reflect" mode (mirror without repeating the
//     edge sample: …x2 x1 | x0 x1 x2 …), so frame k is centred on sample
//     200k and n samples give 1 + n/200 frames (integer division). Reflect is
//     chosen because it is librosa's default in the 0.7 line Wav2Lip pins
//     (requirements.txt: librosa==0.7.0), which is what the published
//     checkpoints were trained on; librosa ≥ 0.10 changed the default to
//     zero ("constant") padding, which changes the first two and last two
//     frames. Inputs shorter than 401 samples are reflected repeatedly (as
//     numpy.pad does); a single sample is repeated.
//   - Magnitude |STFT| (not power) over the 401 bins 0..8000 Hz.
//   - 80 mel bands from 55 to 7600 Hz, librosa.filters.mel(sr=16000,
//     n_fft=800, n_mels=80, fmin=55, fmax=7600) with htk=False and Slaney
//     area normalisation (librosa 0.7's norm=1, later norm='slaney'):
//     Slaney's mel scale is linear below 1 kHz (mel = f/(200/3)) and
//     logarithmic above (mel = 15 + ln(f/1000)/(ln 6.4/27)); band m is a
//     triangle over the 82 edges f_m, f_{m+1}, f_{m+2} spaced evenly in mel,
//     scaled by 2/(f_{m+2} − f_m) so each triangle has unit area in Hz.
//   - M = mel_basis·|STFT|, then Wav2Lip's
//     _amp_to_db(M) = 20·log10(max(10^(min_level_db/20), M)) with
//     min_level_db = −100, minus ref_level_db = 20, then _normalize with
//     max_abs_value 4, symmetric and clipped:
//     clip(2·4·(S − (−100))/100 − 4, −4, 4). Substituting
//     S = 20·log10(max(1e−5, M)) − 20 gives
//     0.08·(20·log10(max(1e−5, M)) − 20 + 100) − 4
//     = 1.6·log10(max(1e−5, M)) + 2.4, clipped to −4..4 — the README ("Media contract")
//     formula. Silence (M = 0) gives 1.6·(−5) + 2.4 = −5.6, clipped to −4:
//     Silence.
//
// The spectrum is computed in float64 (gonum's real FFT) and stored as
// float32; librosa 0.7 works partly in float32 (window, filterbank, complex64
// STFT), so values from it differ by float32 rounding only.
//
// # Frames and windows
//
// Mel frames come at 80 per second (every 200 samples). Video frame i at 25
// fps takes the 16 mel frames from int(i·80/25) (= i·16/5 in integers, the
// same floor Python's int(i * 3.2) gives), covering 200 ms from the frame's
// own time on. Window writes them in the model's [1, 80, 16] layout. A
// model with a shorter look-ahead L gets the 16 frames whose window ends at
// the frame's time + L (WindowStartAt, WindowFrom).
//
// Nothing here keeps package-level state: tables are built by New, and an
// Extractor owns its scratch buffers, so it is not safe for concurrent use
// (use one per stream; New is cheap).
package melspec

import (
	"math"
	"slices"
	"time"

	"gonum.org/v1/gonum/dsp/fourier"
)

// Fixed parameters.
const (
	SampleRate  = 16000
	NFFT        = 800
	Hop         = 200
	WinLength   = 800
	Bins        = NFFT/2 + 1 // 401 STFT bins, 0..8000 Hz in 20 Hz steps
	Bands       = 80
	FMin        = 55.0
	FMax        = 7600.0
	Preemphasis = 0.97

	// FramesPerSecond is the mel frame rate.
	FramesPerSecond = SampleRate / Hop
	// VideoFPS is the video frame rate windows are cut for.
	VideoFPS = 25
	// WindowFrames is the number of mel frames per video frame's window.
	WindowFrames = 16
	// WindowSize is the number of values in one window.
	WindowSize = Bands * WindowFrames

	// Silence is the value of a band with no energy (and the lower clip).
	Silence float32 = -4
	// MaxValue is the upper clip.
	MaxValue float32 = 4

	pad      = NFFT / 2 // center=True padding on each side
	ampFloor = 1e-5     // 10^(min_level_db/20)
)

// Frame is one mel frame: the 80 band values, low to high.
type Frame [Bands]float32

// Extractor computes mel frames. It holds the window, the filterbank and
// the FFT plan, scratch space, and the state of one stream.
type Extractor struct {
	window [NFFT]float64
	// Filterbank, stored sparsely: band b's non-zero weights are
	// weights[off[b]:off[b+1]], for bins lo[b], lo[b]+1, ...
	lo      [Bands]int
	off     [Bands + 1]int
	weights []float64

	fft   *fourier.FFT
	frame [NFFT]float64
	spec  []complex128
	mag   [Bins]float64

	stream state // Append/Flush
	batch  state // Compute

	// fullSilence: a frame whose whole window is digital silence is the
	// constant Silence frame, without the FFT (an idle session's audio;
	// off only in a test that checks the shortcut is exact).
	fullSilence bool
}

// state is the incremental position in one stream.
type state struct {
	buf  []float64 // pre-emphasised samples from absolute index base on
	base int64
	n    int64   // samples received
	prev float32 // last input sample, for the pre-emphasis
	next int64   // index of the next frame to emit
}

func (s *state) reset() {
	s.buf = s.buf[:0]
	s.base, s.n, s.prev, s.next = 0, 0, 0, 0
}

// New returns an Extractor, its tables computed.
func New() *Extractor {
	e := &Extractor{fft: fourier.NewFFT(NFFT), spec: make([]complex128, Bins), fullSilence: true}
	for n := range e.window {
		e.window[n] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(n)/NFFT)
	}
	edges := melEdges()
	for b := range Bands {
		e.lo[b] = -1
		e.off[b] = len(e.weights)
		for k := range Bins {
			w := filterWeight(edges, b, binHz(k))
			if w <= 0 {
				if e.lo[b] >= 0 {
					break // triangles are contiguous
				}
				continue
			}
			if e.lo[b] < 0 {
				e.lo[b] = k
			}
			e.weights = append(e.weights, w)
		}
		if e.lo[b] < 0 {
			e.lo[b] = 0 // an empty band (cannot happen with these parameters)
		}
	}
	e.off[Bands] = len(e.weights)
	return e
}

// HzToMel converts Hz to Slaney mels (librosa.hz_to_mel, htk=False).
func HzToMel(f float64) float64 {
	const fsp = 200.0 / 3
	if f < 1000 {
		return f / fsp
	}
	return 15 + math.Log(f/1000)/(math.Log(6.4)/27)
}

// MelToHz converts Slaney mels to Hz (librosa.mel_to_hz, htk=False).
func MelToHz(m float64) float64 {
	const fsp = 200.0 / 3
	if m < 15 {
		return m * fsp
	}
	return 1000 * math.Exp(math.Log(6.4)/27*(m-15))
}

// melEdges returns the Bands+2 band edges in Hz, evenly spaced in mel from
// FMin to FMax (librosa.mel_frequencies, with numpy.linspace's arithmetic).
func melEdges() [Bands + 2]float64 {
	var e [Bands + 2]float64
	lo, hi := HzToMel(FMin), HzToMel(FMax)
	step := (hi - lo) / (Bands + 1)
	for i := range e {
		e[i] = MelToHz(lo + float64(i)*step)
	}
	e[Bands+1] = MelToHz(hi)
	return e
}

// binHz is the centre frequency of STFT bin k.
func binHz(k int) float64 { return float64(k) * SampleRate / NFFT }

// filterWeight is band b's weight at f Hz, as librosa.filters.mel computes
// it.
func filterWeight(edges [Bands + 2]float64, b int, f float64) float64 {
	lower := (f - edges[b]) / (edges[b+1] - edges[b])
	upper := (edges[b+2] - f) / (edges[b+2] - edges[b+1])
	w := max(0, min(lower, upper))
	return w * 2 / (edges[b+2] - edges[b])
}

// FrameCount is the number of mel frames n samples give: 1 + n/200, or 0 for
// no samples.
func FrameCount(n int) int {
	if n <= 0 {
		return 0
	}
	return 1 + n/Hop
}

// Compute returns the mel spectrogram of a whole 16 kHz signal, FrameCount
// frames. It does not disturb a stream in progress.
func (e *Extractor) Compute(pcm []float32) []Frame {
	e.batch.reset()
	dst := make([]Frame, 0, FrameCount(len(pcm)))
	dst = e.append(&e.batch, dst, pcm)
	dst = e.flush(&e.batch, dst)
	e.batch.reset()
	return dst
}

// Append feeds 16 kHz samples to the stream and appends the mel frames now
// complete to dst, returning the extended slice. Frame k is complete once
// sample 200k+399 (and, for frame 0, sample 400) has arrived; the frames
// whose windows reach past the end of the audio come from Flush. The values
// are identical to Compute's over the whole stream, however the audio is
// cut into pieces. Append allocates only when dst or the internal buffer
// must grow (the buffer holds about 800 samples plus the latest piece).
func (e *Extractor) Append(dst []Frame, pcm []float32) []Frame {
	return e.append(&e.stream, dst, pcm)
}

// Flush ends the stream: it appends the last frames (reflect-padded at the
// end, as center=True does) and resets the stream. Over a stream of n
// samples Append and Flush together yield FrameCount(n) frames.
func (e *Extractor) Flush(dst []Frame) []Frame {
	dst = e.flush(&e.stream, dst)
	e.stream.reset()
	return dst
}

// Reset discards the stream in progress.
func (e *Extractor) Reset() { e.stream.reset() }

func (e *Extractor) append(s *state, dst []Frame, pcm []float32) []Frame {
	s.buf = slices.Grow(s.buf, len(pcm))
	prev := s.prev
	for _, x := range pcm {
		s.buf = append(s.buf, float64(x)-Preemphasis*float64(prev))
		prev = x
	}
	s.prev = prev
	s.n += int64(len(pcm))
	for s.n >= max(pad+1, s.next*Hop+pad) {
		dst = append(dst, Frame{})
		e.frameAt(s, s.next, &dst[len(dst)-1])
		s.next++
	}
	// Keep what the next frames can still reach: from the next frame's
	// first sample, less one for the end reflection of the last frame.
	if keep := s.next*Hop - pad - 1; keep > s.base {
		drop := int(min(keep-s.base, int64(len(s.buf))))
		s.buf = s.buf[:copy(s.buf, s.buf[drop:])]
		s.base += int64(drop)
	}
	return dst
}

func (e *Extractor) flush(s *state, dst []Frame) []Frame {
	// Frames 0 .. n/200 (none when n is 0).
	last := s.n / Hop
	if s.n == 0 {
		last = -1
	}
	for ; s.next <= last; s.next++ {
		dst = append(dst, Frame{})
		e.frameAt(s, s.next, &dst[len(dst)-1])
	}
	return dst
}

// frameAt computes frame k of the stream into out; every sample it needs
// is in s.buf (mirrored at the ends of the s.n samples so far).
func (e *Extractor) frameAt(s *state, k int64, out *Frame) {
	first := k*Hop - pad
	if first >= 0 && first+NFFT <= s.n {
		src := s.buf[first-s.base : first-s.base+NFFT]
		if e.fullSilence && allZero(src) {
			// Every magnitude is 0, so every band is level(0).
			for b := range out {
				out[b] = level(0)
			}
			return
		}
		for j, v := range src {
			e.frame[j] = v * e.window[j]
		}
	} else {
		for j := range e.frame {
			i := reflect(first+int64(j), s.n)
			e.frame[j] = s.buf[i-s.base] * e.window[j]
		}
	}
	e.fft.Coefficients(e.spec, e.frame[:])
	for f, c := range e.spec {
		re, im := real(c), imag(c)
		e.mag[f] = math.Sqrt(re*re + im*im)
	}
	for b := range Bands {
		w := e.weights[e.off[b]:e.off[b+1]]
		m := e.mag[e.lo[b] : e.lo[b]+len(w)]
		var sum float64
		for i, v := range w {
			sum += v * m[i]
		}
		out[b] = level(sum)
	}
}

func allZero(s []float64) bool {
	for _, v := range s {
		if v != 0 {
			return false
		}
	}
	return true
}

// level maps a mel magnitude to the normalised log value.
func level(m float64) float32 {
	v := 1.6*math.Log10(max(ampFloor, m)) + 2.4
	return float32(min(max(v, float64(Silence)), float64(MaxValue)))
}

// reflect maps index i onto 0..n−1 by mirroring at both ends without
// repeating the edge sample (numpy.pad mode "reflect", repeated for
// short inputs); n must be ≥ 1.
func reflect(i, n int64) int64 {
	if n == 1 {
		return 0
	}
	period := 2 * (n - 1)
	i %= period
	if i < 0 {
		i += period
	}
	if i >= n {
		i = period - i
	}
	return i
}

// WindowStart is the first mel frame of video frame i's window:
// int(i·80/25).
func WindowStart(videoFrame int) int {
	return videoFrame * FramesPerSecond / VideoFPS
}

// LookAheadFrames is a look-ahead in mel frames: round(lookAhead·80/s).
func LookAheadFrames(lookAhead time.Duration) int {
	return int((lookAhead*FramesPerSecond + time.Second/2) / time.Second)
}

// WindowStartAt is the first mel frame of video frame i's window for a
// model whose window reaches lookAhead past the frame's own time: the 16
// mel frames whose window ends at t+lookAhead, so
// WindowStart(i) + LookAheadFrames(lookAhead) − 16. A look-ahead of 200 ms
// is WindowStart(i) (Wav2Lip's placement); 80 ms is WindowStart(i) − 10,
// the frame's own time at the window's index 10. It may be negative.
func WindowStartAt(videoFrame int, lookAhead time.Duration) int {
	return WindowStart(videoFrame) + LookAheadFrames(lookAhead) - WindowFrames
}

// Window writes video frame videoFrame's window, mel frames
// WindowStart(videoFrame) .. +15, into dst in the model's input layout
// [1, 80, 16]: dst[b·16 + t] is band b of the window's t-th frame. Frames
// outside mel (past the end of the audio so far, or before its start) are
// Silence: after an utterance the audio is silent, so the last video frames
// see the speech fade out. (Wav2Lip's offline inference instead reuses the
// last 16 frames for the final video frame; a live stream cannot see the
// end coming.)
func Window(dst *[WindowSize]float32, mel []Frame, videoFrame int) {
	WindowFrom(dst, mel, WindowStart(videoFrame), 0)
}

// WindowFrom writes the 16 mel frames from start on, as Window does;
// frames before floor (audio a stream dropped, an interrupted utterance),
// before 0 or past the end of mel are Silence.
func WindowFrom(dst *[WindowSize]float32, mel []Frame, start, floor int) {
	for t := range WindowFrames {
		k := start + t
		if k < 0 || k < floor || k >= len(mel) {
			for b := range Bands {
				dst[b*WindowFrames+t] = Silence
			}
			continue
		}
		fr := &mel[k]
		for b := range Bands {
			dst[b*WindowFrames+t] = fr[b]
		}
	}
}
