package pipeline

import (
	"context"
	"fmt"
	"sync"

	"github.com/avatarfleet/avatarfleet/worker/pkg/resample"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
	"github.com/avatarfleet/avatarfleet/worker/pkg/wav"
)

// input is the speech queue: 16 kHz PCM waiting to be spoken, plus the text
// waiting to be synthesised. gen counts interruptions: audio synthesised for
// an older generation is dropped.
type input struct {
	mu      sync.Mutex
	pcm     []float32 // queued samples are pcm[head:]
	head    int
	max     int
	texts   []string
	gen     uint64
	cancel  context.CancelFunc // the synthesis in flight
	busy    bool               // a text is being synthesised
	closed  bool
	wake    chan struct{}
	flushed chan struct{} // signalled on Interrupt, for the media goroutine
}

func (in *input) init(maxSamples int) {
	in.max = maxSamples
	in.wake = make(chan struct{}, 1)
	in.flushed = make(chan struct{}, 1)
}

func (in *input) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	if in.cancel != nil {
		in.cancel()
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (in *input) state() (queued int, synthesizing bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.pcm) - in.head, in.busy || len(in.texts) > 0
}

// interruptLocked drops everything queued and cancels the synthesis.
func (in *input) interruptLocked() {
	in.gen++
	in.pcm, in.head = in.pcm[:0], 0
	in.texts = nil
	if in.cancel != nil {
		in.cancel()
		in.cancel = nil
	}
	signal(in.flushed)
}

// pushLocked appends samples, up to the bound; it reports whether all fit.
func (in *input) pushLocked(s []float32) bool {
	if in.head > 0 && in.head >= len(in.pcm)/2 {
		n := copy(in.pcm, in.pcm[in.head:])
		in.pcm, in.head = in.pcm[:n], 0
	}
	room := in.max - (len(in.pcm) - in.head)
	fit := len(s) <= room
	if !fit {
		s = s[:max(room, 0)]
	}
	in.pcm = append(in.pcm, s...)
	return fit
}

// take copies up to len(dst) queued samples into dst, zero-filling the
// rest; it returns how many were speech.
func (in *input) take(dst []float32) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := copy(dst, in.pcm[in.head:])
	in.head += n
	if in.head == len(in.pcm) {
		in.pcm, in.head = in.pcm[:0], 0
	}
	clear(dst[n:])
	return n
}

// Speak queues text to be synthesised and spoken after what is queued;
// interrupt first drops everything queued. It fails when the speech queue
// is full or the pipeline is closed; synthesis errors are logged.
func (p *Pipeline) Speak(text string, interrupt bool) error {
	if p.opt.TTS == nil {
		return fmt.Errorf("%w: no TTS engine", ErrConfig)
	}
	in := &p.input
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return fmt.Errorf("speak: %w", ErrClosed)
	}
	if interrupt {
		in.interruptLocked()
	}
	if len(in.pcm)-in.head >= in.max {
		return fmt.Errorf("speak: %w", ErrQueueFull)
	}
	in.texts = append(in.texts, text)
	signal(in.wake)
	return nil
}

// PushAudio queues a whole WAV file (any rate the wav package reads; it is
// resampled to 16 kHz mono); interrupt first drops everything queued. A bad
// file gives an error wrapping ErrBadAudio and changes nothing.
func (p *Pipeline) PushAudio(b []byte, interrupt bool) error {
	a, err := wav.Parse(b, wav.Options{})
	if err != nil {
		return fmt.Errorf("push audio: %w: %w", ErrBadAudio, err)
	}
	s := a.Samples
	if a.SampleRate != SampleRate {
		if s, err = resample.Resample(s, a.SampleRate, SampleRate); err != nil {
			return fmt.Errorf("push audio: resample %d Hz: %w", a.SampleRate, err)
		}
	}
	in := &p.input
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return fmt.Errorf("push audio: %w", ErrClosed)
	}
	if interrupt {
		in.interruptLocked()
	}
	if len(in.pcm)-in.head+len(s) > in.max {
		return fmt.Errorf("push audio: %v of audio: %w", a.Duration(), ErrQueueFull)
	}
	in.pushLocked(s)
	return nil
}

// PushPCM appends live 16 kHz mono audio (a WHIP publisher's microphone)
// to the speech queue, after whatever is queued and without interrupting
// it. Successive calls form one continuous stream: silence is queued too
// and the energy gate skips inference on it, so the stream's timing is
// kept. When the queue cannot take all of pcm, what fits is queued and the
// error wraps ErrQueueFull (a live stream then loses its newest audio).
// The caller keeps pcm.
func (p *Pipeline) PushPCM(pcm []float32) error {
	in := &p.input
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return fmt.Errorf("push pcm: %w", ErrClosed)
	}
	if !in.pushLocked(pcm) {
		return fmt.Errorf("push pcm: %d samples: %w", len(pcm), ErrQueueFull)
	}
	return nil
}

// Interrupt drops all queued speech and cancels the synthesis in flight; the
// next frame sent is idle and silent.
func (p *Pipeline) Interrupt() {
	p.input.mu.Lock()
	defer p.input.mu.Unlock()
	p.input.interruptLocked()
}

// synthesize runs until ctx ends: it synthesises the queued texts in order
// and appends their audio to the queue.
func (p *Pipeline) synthesize(ctx context.Context) error {
	in := &p.input
	for {
		in.mu.Lock()
		if len(in.texts) == 0 {
			in.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil
			case <-in.wake:
				continue
			}
		}
		text := in.texts[0]
		in.texts = in.texts[1:]
		gen := in.gen
		jctx, cancel := context.WithCancel(ctx)
		in.cancel, in.busy = cancel, true
		in.mu.Unlock()

		p.speakOne(jctx, text, gen)
		cancel()
		in.mu.Lock()
		in.busy = false
		if in.gen == gen {
			in.cancel = nil
		}
		in.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// speakOne synthesises one text, queueing each piece as it comes.
func (p *Pipeline) speakOne(ctx context.Context, text string, gen uint64) {
	in := &p.input
	for chunk, err := range (tts.Splitter{}).Chunks(ctx, p.opt.TTS, text, p.opt.Voice) {
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("speech synthesis failed", "err", err)
			}
			return
		}
		in.mu.Lock()
		stale := in.gen != gen
		full := !stale && !in.pushLocked(chunk.Audio.Samples)
		in.mu.Unlock()
		if stale {
			return
		}
		if full {
			p.log.Warn("speech queue full: text truncated", "piece", chunk.Index)
			return
		}
	}
}
