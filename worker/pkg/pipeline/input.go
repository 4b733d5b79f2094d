package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/resample"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// input is the speech queue: 16 kHz PCM waiting to be spoken, plus the text
// waiting to be synthesised. gen counts interruptions: audio synthesised for
// an older generation is dropped.
//
// What it holds is counted in bytes (account): buffered for the pipeline's
// owner, and budget, shared by the worker's pipelines.
type input struct {
	mu        sync.Mutex
	pcm       []float32 // queued samples are pcm[head:]
	head      int
	max       int // bound on queued plus reserved samples
	maxLive   int // PushPCM queues only while fewer samples than this wait
	maxText   int // bound on textBytes
	reserved  int // samples of WAV files being decoded, not yet queued
	texts     []queuedText
	textBytes int
	// taken counts the samples take has handed out; marks (in order of
	// at) say where in that count a tracked text's sentence ends.
	taken     int64
	marks     []spokenMark
	budget    *Budget
	accounted int64        // bytes this input has added to budget
	buffered  atomic.Int64 // == accounted, for lock-free readers
	gen       uint64
	cancel    context.CancelFunc // the synthesis in flight
	busy      bool               // a text is being synthesised
	closed    bool
	wake      chan struct{}
	flushed   chan struct{} // signalled on Interrupt, for the media goroutine
}

// queuedText is a text waiting for synthesis and who is told how far it
// has been spoken (nil: nobody).
type queuedText struct {
	text     string
	progress func(remaining string)
}

// spokenMark calls progress(rest) once take has handed out at samples: the
// end of a sentence of a tracked text (rest is what follows it).
type spokenMark struct {
	at       int64
	rest     string
	progress func(remaining string)
}

func (in *input) init(maxSamples, maxLive, maxText int, budget *Budget) {
	in.max, in.maxLive, in.maxText, in.budget = maxSamples, maxLive, maxText, budget
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
	in.account()
}

// account brings buffered and the budget up to date with what the input
// holds (nothing once closed). Call it with mu held after every change.
func (in *input) account() {
	var held int64
	if !in.closed {
		held = int64(len(in.pcm)-in.head+in.reserved)*4 + int64(in.textBytes)
	}
	in.budget.add(held - in.accounted)
	in.accounted = held
	in.buffered.Store(held)
}

// reserveLocked counts n more bytes against the budget, if they fit; the
// caller then makes them part of what account counts.
func (in *input) reserveLocked(n int64) bool {
	if in.closed || !in.budget.tryAdd(n) {
		return false
	}
	in.accounted += n
	return true
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
	in.texts, in.textBytes = nil, 0
	// Interrupted text is never reported: whoever interrupted it has
	// dropped it from the durable queue already.
	clear(in.marks)
	in.marks = in.marks[:0]
	if in.cancel != nil {
		in.cancel()
		in.cancel = nil
	}
	in.account()
	signal(in.flushed)
}

// pushLocked appends samples, up to the bound; it reports whether all fit.
func (in *input) pushLocked(s []float32) bool {
	if in.head > 0 && in.head >= len(in.pcm)/2 {
		n := copy(in.pcm, in.pcm[in.head:])
		in.pcm, in.head = in.pcm[:n], 0
	}
	room := in.max - (len(in.pcm) - in.head) - in.reserved
	fit := len(s) <= room
	if !fit {
		s = s[:max(room, 0)]
	}
	in.pcm = append(in.pcm, s...)
	in.account()
	return fit
}

// take copies up to len(dst) queued samples into dst, zero-filling the
// rest; it returns how many were speech, and appends to spoken the marks of
// the sentences whose last sample is now handed out.
func (in *input) take(dst []float32, spoken []spokenMark) (int, []spokenMark) {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := copy(dst, in.pcm[in.head:])
	in.head += n
	in.taken += int64(n)
	if in.head == len(in.pcm) {
		in.pcm, in.head = in.pcm[:0], 0
	}
	if n > 0 {
		in.account()
	}
	clear(dst[n:])
	k := 0
	for k < len(in.marks) && in.marks[k].at <= in.taken {
		k++
	}
	if k > 0 {
		spoken = append(spoken, in.marks[:k]...)
		m := copy(in.marks, in.marks[k:])
		clear(in.marks[m:])
		in.marks = in.marks[:m]
	}
	return n, spoken
}

// markLocked has progress(rest) called once everything queued now has been
// handed out.
func (in *input) markLocked(rest string, progress func(string)) {
	in.marks = append(in.marks, spokenMark{at: in.taken + int64(len(in.pcm)-in.head), rest: rest, progress: progress})
}

// Speak queues text to be synthesised and spoken after what is queued;
// interrupt first drops everything queued. It fails when the speech queue
// is full or the pipeline is closed; synthesis errors are logged.
func (p *Pipeline) Speak(text string, interrupt bool) error {
	return p.SpeakTracked(text, interrupt, nil)
}

// SpeakTracked is Speak, and progress is told how far the text has been
// spoken: after each sentence's audio has left the pipeline (sent to the
// sink), with the text of the sentences still to come, and "" after the
// last one. A text that cannot be spoken (a synthesis error, a full queue)
// is reported "" too, once what was queued of it has played. Text dropped
// by an interrupt, or left when the pipeline closes, is not reported.
// progress runs on the media goroutine and must not block.
func (p *Pipeline) SpeakTracked(text string, interrupt bool, progress func(remaining string)) error {
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
	if in.textBytes+len(text) > in.maxText {
		return fmt.Errorf("speak: %d bytes of text wait for synthesis, limit %d: %w", in.textBytes, in.maxText, ErrQueueFull)
	}
	if !in.reserveLocked(int64(len(text))) {
		return fmt.Errorf("speak: %d bytes of text: %w (%v)", len(text), ErrOverBudget, in.budget)
	}
	in.texts = append(in.texts, queuedText{text: text, progress: progress})
	in.textBytes += len(text)
	in.account()
	signal(in.wake)
	return nil
}

// PushAudio queues a whole WAV file (any rate the wav package reads; it is
// resampled to 16 kHz mono); interrupt first drops everything queued. A bad
// file gives an error wrapping ErrBadAudio and changes nothing.
//
// Nothing is decoded before the file's header has passed: the format, a
// duration of at most MaxQueue (ErrBadAudio otherwise), room in the queue
// for it (ErrQueueFull) and in the Budget (ErrOverBudget). The queue room
// and budget are then held while the file is decoded and resampled a
// chunk at a time, so concurrent pushes cannot overrun them either.
func (p *Pipeline) PushAudio(b []byte, interrupt bool) error {
	h, err := wav.Probe(b, p.opt.MaxQueue)
	if err != nil {
		return fmt.Errorf("push audio: %w: %w", ErrBadAudio, err)
	}
	n := int(resample.OutLen(h.Present, h.SampleRate, SampleRate))
	dur := time.Duration(n) * time.Second / SampleRate
	in := &p.input
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return fmt.Errorf("push audio: %w", ErrClosed)
	}
	queued := len(in.pcm) - in.head
	if interrupt {
		queued = 0
	}
	if queued+in.reserved+n > in.max {
		in.mu.Unlock()
		return fmt.Errorf("push audio: %v of audio: %w", dur, ErrQueueFull)
	}
	if !in.reserveLocked(4 * int64(n)) {
		in.mu.Unlock()
		return fmt.Errorf("push audio: %v of audio: %w (%v)", dur, ErrOverBudget, in.budget)
	}
	in.reserved += n
	in.account()
	in.mu.Unlock()

	s, err := decodeTo16k(b, h, n)

	in.mu.Lock()
	defer in.mu.Unlock()
	in.reserved -= n
	in.account()
	if err != nil {
		return fmt.Errorf("push audio: %w: %w", ErrBadAudio, err)
	}
	if in.closed {
		return fmt.Errorf("push audio: %w", ErrClosed)
	}
	if interrupt {
		in.interruptLocked()
	}
	if len(in.pcm)-in.head+in.reserved+len(s) > in.max {
		return fmt.Errorf("push audio: %v of audio: %w", dur, ErrQueueFull)
	}
	in.pushLocked(s)
	return nil
}

// decodeTo16k decodes the probed WAV file b into at most n samples at
// SampleRate, a chunk at a time.
func decodeTo16k(b []byte, h wav.Header, n int) ([]float32, error) {
	d, err := wav.NewDecoder(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	s, err := resample.ReadAll(d, h.SampleRate, SampleRate, n, n)
	if err != nil {
		return nil, fmt.Errorf("decode %d Hz audio: %w", h.SampleRate, err)
	}
	return s, nil
}

// PushPCM appends live 16 kHz mono audio (a WHIP publisher's microphone)
// to the speech queue, after whatever is queued and without interrupting
// it. Successive calls form one continuous stream: silence is queued too
// and the energy gate skips inference on it, so the stream's timing is
// kept. When the queue cannot take all of pcm, what fits is queued and the
// error wraps ErrQueueFull (a live stream then loses its newest audio).
// Live audio is queued only while less than Options.MaxLive of speech
// waits, so a publisher cannot buffer more than that however fast it
// sends. The caller keeps pcm.
func (p *Pipeline) PushPCM(pcm []float32) error {
	in := &p.input
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return fmt.Errorf("push pcm: %w", ErrClosed)
	}
	if len(in.pcm)-in.head >= in.maxLive {
		return fmt.Errorf("push pcm: %d samples, %d already queued: %w", len(pcm), len(in.pcm)-in.head, ErrQueueFull)
	}
	if !in.pushLocked(pcm) {
		return fmt.Errorf("push pcm: %d samples: %w", len(pcm), ErrQueueFull)
	}
	return nil
}

// PushPCMMarked is PushPCM, and then sent (if not nil) is called once the
// last of the samples queued has been sent to the Sink: on the media
// goroutine, right after the tick's samples were written, so it must not
// block. An Interrupt drops it uncalled with the samples. A LiveKit
// agent's audio reports its playback through it.
func (p *Pipeline) PushPCMMarked(pcm []float32, sent func()) error {
	in := &p.input
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return fmt.Errorf("push pcm: %w", ErrClosed)
	}
	if len(in.pcm)-in.head >= in.maxLive {
		return fmt.Errorf("push pcm: %d samples, %d already queued: %w", len(pcm), len(in.pcm)-in.head, ErrQueueFull)
	}
	fit := in.pushLocked(pcm)
	if sent != nil {
		in.markLocked("", func(string) { sent() })
	}
	if !fit {
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
		in.texts[0] = queuedText{}
		in.texts = in.texts[1:]
		in.textBytes -= len(text.text)
		in.account()
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

// speakOne synthesises one text, queueing each piece as it comes, and
// marks where each piece ends for the text's progress.
func (p *Pipeline) speakOne(ctx context.Context, text queuedText, gen uint64) {
	in := &p.input
	var rests []string
	settled := text.progress == nil
	if !settled {
		rests = restsAfterPieces(text.text)
	}
	defer func() {
		if settled {
			return
		}
		// The rest will not be spoken here: report the text done once what
		// was queued of it has played, so it is not replayed elsewhere
		// either. Not when interrupted or closed (see SpeakTracked).
		in.mu.Lock()
		if in.gen == gen && !in.closed {
			in.markLocked("", text.progress)
		}
		in.mu.Unlock()
	}()
	start, first := time.Now(), true
	for chunk, err := range (tts.Splitter{}).Chunks(ctx, p.opt.TTS, text.text, p.opt.Voice) {
		if first && err == nil && p.opt.ObserveSynthesis != nil {
			p.opt.ObserveSynthesis(time.Since(start))
		}
		first = false
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("speech synthesis failed", "err", err)
			} else {
				settled = true // interrupted or closing: see SpeakTracked
			}
			return
		}
		in.mu.Lock()
		stale := in.gen != gen
		full := !stale && !in.pushLocked(chunk.Audio.Samples)
		if !stale && !full && !settled {
			rest := rests[chunk.Index]
			in.markLocked(rest, text.progress)
			settled = rest == ""
		}
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

// restsAfterPieces returns, for each piece Chunks yields of text, the text
// that follows it: a suffix of text, trimmed. Every non-space character of
// text is in exactly one piece, in order (tts.Splitter), so the suffix
// starts after as many non-space characters as the pieces so far hold.
func restsAfterPieces(text string) []string {
	pieces := tts.Splitter{}.Split(text)
	rests := make([]string, len(pieces))
	i := 0 // byte offset in text
	for k, p := range pieces {
		for _, r := range p {
			if unicode.IsSpace(r) {
				continue
			}
			for i < len(text) {
				c, size := utf8.DecodeRuneInString(text[i:])
				i += size
				if !unicode.IsSpace(c) {
					break
				}
			}
		}
		rests[k] = strings.TrimSpace(text[i:])
	}
	return rests
}
