// Package resample converts audio between sample rates with a polyphase
// windowed-sinc filter; its main use is bringing speech to the 16 kHz the mel
// features need.
//
// # Why this package exists
//
// No maintained pure-Go resampler of this quality was available:
// github.com/zaf/resample, github.com/dh1tw/gosamplerate and go-soxr bind C
// libraries through cgo (libsoxr, libsamplerate), which the worker does not
// link; github.com/tphakala/go-audio-resampler (a pure-Go soxr port) is not
// served by the module proxy this project builds from; gopxl/beep's Resample
// and the polynomial interpolators (schollz/interpolation) do no anti-alias
// low-pass, so downsampling 48 kHz to 16 kHz would fold 8..24 kHz into the
// speech band; gonum has no resampler. The filter below is small and fully
// tested, so it lives here.
//
// # Filter
//
// The ratio out/in is reduced by their gcd to L/M. Output sample j sits at
// input position t = j·M/L and is Σ x[n]·g(t−n) over the taps around t, where
// g is a sinc low-pass windowed by a Kaiser window:
//
//	g(τ) = 2c·sinc(2c·τ)·I0(β·√(1−(τ/W)²))/I0(β),  |τ| ≤ W
//
// in input-sample units, with c the cutoff in cycles per input sample. The
// half-width W spans Config.HalfLength samples of the lower of the two rates
// (48 by default, so 96 lower-rate samples in all: 288 taps per output when
// going 48k→16k, 98 when going 8k→16k). β and the transition width come from
// Kaiser's formulas for Config.StopbandDB (80 dB by default): the stop band
// starts exactly at the lower rate's Nyquist frequency and the −6 dB cutoff
// sits half a transition below it — at 16 kHz, pass band to about 7.16 kHz,
// cutoff 7.58 kHz, ≥ 80 dB down from 8 kHz. (Wav2Lip's training audio went
// through resampy's kaiser_best, whose cutoff, 0.9476 of Nyquist, is 7.58 kHz
// at 16 kHz as well.) Each phase of the table is normalised to a DC gain of
// exactly 1.
//
// When L ≤ 1024 (every common audio rate pair: 44.1k→16k is 160/441) the
// table holds all L phases and the conversion is exact. For stranger rate
// pairs the table holds 1024 phases and each output interpolates linearly
// between the two nearest, which keeps the error around −100 dB.
//
// # Timing
//
// The filter is zero-phase: output j is aligned with input time j·M/L, so
// the one-shot output lines up with the input sample for sample. Streaming
// therefore looks ahead: an output is emitted once LookAhead() input samples
// past its position have arrived (3 ms at the default quality). Input before
// the start and after Flush is taken as silence.
package resample

import (
	"errors"
	"fmt"
	"io"
	"math"
)

// ErrorKind classifies errors; errors.Is(err, resample.ErrInvalid) works on
// the wrapped, detailed errors New returns.
type ErrorKind string

// Error implements error.
func (k ErrorKind) Error() string { return string(k) }

// Error kinds.
const (
	// ErrInvalid is returned (wrapped with detail) for rates or a Config
	// out of range.
	ErrInvalid ErrorKind = "resample: invalid argument"
	// ErrTooLong: ReadAll's output would pass its limit.
	ErrTooLong ErrorKind = "resample: output too long"
)

// Limits.
const (
	// MaxRate is the highest sample rate accepted, in Hz.
	MaxRate = 1_000_000
	// MaxDownRatio is the largest in/out ratio accepted; the filter length
	// grows with it.
	MaxDownRatio = 256
	// MaxUpRatio is the largest out/in ratio accepted: the output grows
	// with it (a signal claiming 1 Hz brought to 16 kHz is 16000 times its
	// input), so a tiny input rate is refused rather than allocated for.
	MaxUpRatio = 256
	// maxExactPhases is the largest L for which every phase is tabulated.
	maxExactPhases = 1024
)

// Config sets the filter quality. The zero value means the defaults.
type Config struct {
	// HalfLength is the filter's half-width in samples of the lower of the
	// two rates, 8..256; 0 means 48.
	HalfLength int
	// StopbandDB is the stop-band attenuation in dB, 40..180; 0 means 80.
	StopbandDB float64
}

// Resampler converts one stream. It keeps the input history between calls to
// Process, so a stream can be fed in pieces of any size; it is not safe for
// concurrent use. After the first calls have grown its buffers it does not
// allocate.
type Resampler struct {
	in, out int
	l, m    int // out/g, in/g
	ident   bool

	taps   int // taps per phase, a multiple of 4
	half   int // taps/2: the look-ahead in input samples
	phases int // rows in coef that are phases (coef has phases+1 rows when interp)
	interp bool
	coef   []float32

	buf   []float32 // pending input; buf[start] is the first tap of the next output
	start int
	p     int   // phase numerator of the next output, 0..l-1
	n0    int64 // input index of the next output's integer position
	total int64 // input samples received in this stream
}

// New returns a Resampler from inRate to outRate Hz with the default quality.
func New(inRate, outRate int) (*Resampler, error) {
	return NewWithConfig(inRate, outRate, Config{})
}

// NewWithConfig returns a Resampler from inRate to outRate Hz with the given
// quality.
func NewWithConfig(inRate, outRate int, cfg Config) (*Resampler, error) {
	if inRate < 1 || inRate > MaxRate || outRate < 1 || outRate > MaxRate {
		return nil, fmt.Errorf("%w: rates %d→%d Hz, each must be 1..%d", ErrInvalid, inRate, outRate, MaxRate)
	}
	if inRate > MaxDownRatio*outRate {
		return nil, fmt.Errorf("%w: %d→%d Hz is a reduction by more than %d", ErrInvalid, inRate, outRate, MaxDownRatio)
	}
	if outRate > MaxUpRatio*inRate {
		return nil, fmt.Errorf("%w: %d→%d Hz is an increase by more than %d", ErrInvalid, inRate, outRate, MaxUpRatio)
	}
	if cfg.HalfLength == 0 {
		cfg.HalfLength = 48
	}
	if cfg.StopbandDB == 0 {
		cfg.StopbandDB = 80
	}
	if cfg.HalfLength < 8 || cfg.HalfLength > 256 {
		return nil, fmt.Errorf("%w: HalfLength %d, want 8..256", ErrInvalid, cfg.HalfLength)
	}
	if !(cfg.StopbandDB >= 40 && cfg.StopbandDB <= 180) {
		return nil, fmt.Errorf("%w: StopbandDB %v, want 40..180", ErrInvalid, cfg.StopbandDB)
	}
	g := gcd(inRate, outRate)
	r := &Resampler{in: inRate, out: outRate, l: outRate / g, m: inRate / g}
	if r.l == 1 && r.m == 1 {
		r.ident = true
		return r, nil
	}

	// Kaiser design over N = 2·HalfLength lower-rate samples.
	lower := float64(min(inRate, outRate))
	a := cfg.StopbandDB
	n := float64(2 * cfg.HalfLength)
	trans := (a - 7.95) / (14.36 * n) // transition width, cycles per lower-rate sample
	fc := (0.5 - trans/2) * lower     // cutoff in Hz; stop band starts at lower/2
	c := fc / float64(inRate)         // cycles per input sample
	w := float64(cfg.HalfLength) * float64(inRate) / lower
	if inRate < outRate {
		w = float64(cfg.HalfLength)
	}
	beta := kaiserBeta(a)

	r.half = int(math.Ceil(w)) + 1
	r.taps = (2*r.half + 3) &^ 3
	r.half = r.taps / 2
	r.phases = r.l
	rows := r.l
	if r.l > maxExactPhases {
		r.interp = true
		r.phases = maxExactPhases
		rows = maxExactPhases + 1
	}
	r.coef = make([]float32, rows*r.taps)
	i0b := besselI0(beta)
	row := make([]float64, r.taps)
	for p := range rows {
		frac := float64(p) / float64(r.phases)
		var sum float64
		for k := range r.taps {
			tau := float64(r.half-1-k) + frac
			var v float64
			if x := tau / w; x > -1 && x < 1 {
				v = 2 * c * sinc(2*c*tau) * besselI0(beta*math.Sqrt(1-x*x)) / i0b
			}
			row[k] = v
			sum += v
		}
		for k, v := range row {
			r.coef[p*r.taps+k] = float32(v / sum)
		}
	}
	r.Reset()
	return r, nil
}

// InRate and OutRate are the rates the Resampler converts between.
func (r *Resampler) InRate() int { return r.in }

// OutRate is the output sample rate in Hz.
func (r *Resampler) OutRate() int { return r.out }

// LookAhead is how many input samples past an output's position must have
// arrived before Process emits it (0 when the rates are equal).
func (r *Resampler) LookAhead() int { return r.half }

// Taps is the number of filter taps per output sample.
func (r *Resampler) Taps() int { return r.taps }

// Reset discards the stream in progress.
func (r *Resampler) Reset() {
	r.p, r.n0, r.total, r.start = 0, 0, 0, 0
	if r.ident {
		return
	}
	// History before the stream: half−1 zeros, so that the first output's
	// first tap (input index −half+1) is buf[0].
	r.buf = r.buf[:0]
	for range r.half - 1 {
		r.buf = append(r.buf, 0)
	}
}

// Process feeds src to the stream and appends every output sample that is now
// complete to dst, returning the extended slice. It allocates only when dst
// or the internal buffer must grow.
func (r *Resampler) Process(dst, src []float32) []float32 {
	if r.ident {
		return append(dst, src...)
	}
	r.total += int64(len(src))
	r.buf = append(r.buf, src...)
	return r.run(dst, math.MaxInt64)
}

// Flush ends the stream: it appends the remaining output (the input is taken
// as silence past its end) and resets the Resampler for a new stream. Over a
// whole stream of n input samples the output has ⌈n·out/in⌉ samples.
func (r *Resampler) Flush(dst []float32) []float32 {
	if r.ident {
		return dst
	}
	for range r.half {
		r.buf = append(r.buf, 0)
	}
	dst = r.run(dst, r.total)
	r.Reset()
	return dst
}

// run emits outputs while their taps are in buf and their position is below
// limit, then drops the input no longer needed.
func (r *Resampler) run(dst []float32, limit int64) []float32 {
	taps, buf, coef := r.taps, r.buf, r.coef
	start, p, n0 := r.start, r.p, r.n0
	for start+taps <= len(buf) && n0 < limit {
		x := buf[start : start+taps]
		var y float32
		if !r.interp {
			y = dot(coef[p*taps:(p+1)*taps], x)
		} else {
			pos := float64(p) * float64(r.phases) / float64(r.l)
			i := int(pos)
			a := float32(pos - float64(i))
			y0 := dot(coef[i*taps:(i+1)*taps], x)
			y1 := dot(coef[(i+1)*taps:(i+2)*taps], x)
			y = y0 + a*(y1-y0)
		}
		dst = append(dst, y)
		p += r.m
		adv := p / r.l
		p -= adv * r.l
		start += adv
		n0 += int64(adv)
	}
	// Keep buf from the next output's first tap on.
	drop := min(start, len(buf))
	r.buf = buf[:copy(buf, buf[drop:])]
	r.start = start - drop
	r.p, r.n0 = p, n0
	return dst
}

// Resample converts a whole signal from inRate to outRate with the default
// quality; the result has ⌈len(src)·outRate/inRate⌉ samples, aligned with
// the input.
func Resample(src []float32, inRate, outRate int) ([]float32, error) {
	r, err := New(inRate, outRate)
	if err != nil {
		return nil, err
	}
	n := (int64(len(src))*int64(r.l) + int64(r.m) - 1) / int64(r.m)
	dst := make([]float32, 0, n)
	dst = r.Process(dst, src)
	return r.Flush(dst), nil
}

// Reader is a source of samples read in pieces: Read fills up to len(dst)
// samples and returns io.EOF at the end (wav.Decoder is one).
type Reader interface {
	Read(dst []float32) (int, error)
}

// ChunkSize is how many input samples ReadAll converts at a time.
const ChunkSize = 4096

// OutLen is the length of the output of n input samples converted from
// inRate to outRate over a whole stream: ⌈n·outRate/inRate⌉.
func OutLen(n int64, inRate, outRate int) int64 {
	if n <= 0 || inRate <= 0 || outRate <= 0 {
		return 0
	}
	g := int64(gcd(inRate, outRate))
	l, m := int64(outRate)/g, int64(inRate)/g
	return n/m*l + (n%m*l+m-1)/m
}

// ReadAll reads src to its end, ChunkSize samples at a time, converts it
// from inRate to outRate as it goes and returns the whole output. It
// allocates the output (sizeHint samples up front when known, growing
// past it only as data arrives) and one chunk, never a copy of the whole
// input. Output longer than maxOut samples stops it with ErrTooLong; an
// error from src is returned wrapped. The result is the same as Resample
// of the whole input.
func ReadAll(src Reader, inRate, outRate, maxOut, sizeHint int) ([]float32, error) {
	r, err := New(inRate, outRate)
	if err != nil {
		return nil, err
	}
	dst := make([]float32, 0, min(max(sizeHint, 0), max(maxOut, 0)))
	buf := make([]float32, ChunkSize)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			dst = r.Process(dst, buf[:n])
			if len(dst) > maxOut {
				return nil, fmt.Errorf("%w: more than %d samples at %d Hz", ErrTooLong, maxOut, outRate)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("resample: reading input: %w", rerr)
		}
	}
	dst = r.Flush(dst)
	if len(dst) > maxOut {
		return nil, fmt.Errorf("%w: more than %d samples at %d Hz", ErrTooLong, maxOut, outRate)
	}
	return dst, nil
}

// dot is Σ a[i]·b[i] over len(a), which must be a multiple of 4 and at most
// len(b).
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	for i := 0; i+3 < len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	return (s0 + s1) + (s2 + s3)
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// kaiserBeta is Kaiser's β for a stop-band attenuation of a dB.
func kaiserBeta(a float64) float64 {
	switch {
	case a > 50:
		return 0.1102 * (a - 8.7)
	case a >= 21:
		return 0.5842*math.Pow(a-21, 0.4) + 0.07886*(a-21)
	}
	return 0
}

// besselI0 is the modified Bessel function of the first kind, order 0, by
// its power series (converges quickly for the β·1 arguments used here).
func besselI0(x float64) float64 {
	sum, term := 1.0, 1.0
	q := x * x / 4
	for k := 1; k < 500; k++ {
		term *= q / float64(k*k)
		sum += term
		if term < sum*1e-17 {
			break
		}
	}
	return sum
}
