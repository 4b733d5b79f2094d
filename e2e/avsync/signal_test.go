//go:build linux

package avsync

import (
	"math"
	"sort"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
)

const wavRate = 16000

// burstWAV is the test's speech: lead of silence, then voiced bursts (a
// 140 Hz glottal-like harmonic series with 15 ms raised-cosine edges) of
// burst length separated by the gaps. It returns the WAV and the bursts'
// onsets within it.
func burstWAV(lead, burst time.Duration, gaps []time.Duration) ([]byte, []time.Duration) {
	var pcm []float32
	var onsets []time.Duration
	samples := func(d time.Duration) int { return int(d * wavRate / time.Second) }
	pcm = append(pcm, make([]float32, samples(lead))...)
	for i := 0; i <= len(gaps); i++ {
		onsets = append(onsets, time.Duration(len(pcm))*time.Second/wavRate)
		pcm = append(pcm, voiced(samples(burst))...)
		if i < len(gaps) {
			pcm = append(pcm, make([]float32, samples(gaps[i]))...)
		}
	}
	pcm = append(pcm, make([]float32, samples(300*time.Millisecond))...)
	return wav.Encode16(pcm, wavRate), onsets
}

// voiced is n samples of a harmonic series (f0 140 Hz, harmonics to 3 kHz
// at 1/k), peak about 0.5, with raised-cosine edges.
func voiced(n int) []float32 {
	out := make([]float32, n)
	ramp := wavRate * 15 / 1000
	for i := range out {
		t := float64(i) / wavRate
		var v float64
		for k := 1; k*140 < 3000; k++ {
			v += math.Sin(2*math.Pi*140*float64(k)*t) / float64(k)
		}
		g := 1.0
		if i < ramp {
			g = 0.5 - 0.5*math.Cos(math.Pi*float64(i)/float64(ramp))
		} else if n-1-i < ramp {
			g = 0.5 - 0.5*math.Cos(math.Pi*float64(n-1-i)/float64(ramp))
		}
		out[i] = float32(0.3 * g * v)
	}
	return out
}

// series is a signal sampled at sender times (seconds), each sample
// standing for [t, t+span).
type series struct {
	t, v []float64
	span float64
}

// at is the value at time x: linear between the samples' centres.
func (s series) at(x float64) (float64, bool) {
	c := x - s.span/2
	i := sort.SearchFloat64s(s.t, c)
	switch {
	case len(s.t) == 0 || i == 0 && c < s.t[0] || i >= len(s.t):
		return 0, false
	case s.t[i] == c:
		return s.v[i], true
	}
	t0, t1 := s.t[i-1], s.t[i]
	if t1-t0 > 3*s.span { // a hole: no sample there
		return 0, false
	}
	f := (c - t0) / (t1 - t0)
	return s.v[i-1]*(1-f) + s.v[i]*f, true
}

// pearson is the correlation of x and y.
func pearson(x, y []float64) float64 {
	n := float64(len(x))
	var sx, sy, sxx, syy, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		syy += y[i] * y[i]
		sxy += x[i] * y[i]
	}
	cov := sxy/n - sx/n*sy/n
	vx, vy := sxx/n-sx/n*sx/n, syy/n-sy/n*sy/n
	if vx <= 0 || vy <= 0 {
		return 0
	}
	return cov / math.Sqrt(vx*vy)
}

// bestLag cross-correlates the mouth (sampled at its frames' centres) with
// the audio energy shifted by lag, for lags in [−maxLag, maxLag] in steps,
// between from and to (sender seconds). A positive lag: the mouth matches
// the audio lag later (the mouth leads).
func bestLag(mouth, energy series, from, to float64, maxLag, step time.Duration) (time.Duration, float64) {
	best, bestR := time.Duration(0), math.Inf(-1)
	for lag := -maxLag; lag <= maxLag; lag += step {
		var x, y []float64
		for i, t := range mouth.t {
			c := t + mouth.span/2
			if c < from || c > to {
				continue
			}
			e, ok := energy.at(c + lag.Seconds())
			if !ok {
				continue
			}
			x = append(x, mouth.v[i])
			y = append(y, e)
		}
		if len(x) < 25 {
			continue
		}
		if r := pearson(x, y); r > bestR {
			best, bestR = lag, r
		}
	}
	return best, bestR
}
