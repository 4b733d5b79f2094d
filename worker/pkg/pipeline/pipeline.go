// Package pipeline is one session's media pipeline: it turns queued speech
// (text through a tts.Synthesizer, or WAV audio) into a lip-synced VP8 video
// track and an Opus audio track, paced by one media clock.
//
// Every 40 ms tick emits one video frame (25 fps) and two 20 ms Opus frames,
// all stamped from the same tick counter, so audio and video cannot drift
// apart however long the session runs. While speaking, each tick takes 40 ms
// (640 samples) of 16 kHz speech, extends the streaming mel spectrogram,
// runs the lip-sync model on the face crop of the avatar's idle-loop frame
// and composites the mouth back; while silent (an energy gate), it skips
// inference and sends the plain idle frame — encoded once for every idle
// session of the avatar when Options.IdleVideo is set (see IdleVideo).
//
// The mel window of video frame i reaches the model's look-ahead
// (lipsync.Shape.LookAhead: 200 ms for Wav2Lip's window, 80 ms for the
// default model) past the frame's own audio, so both tracks are delayed by
// a delay line of D ticks sized from it and a measured processing margin
// (see delay.go, Pipeline.Delay): at tick n the pipeline sends the video
// and the audio of the speech taken at tick n−D, stamped n·40 ms.
package pipeline

import (
	"errors"
	"fmt"
	"image"
	"log/slog"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/codec"
	"github.com/avatarfleet/avatarfleet/worker/pkg/composite"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/melspec"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

const (
	// FrameDuration is one tick of the media clock: one video frame.
	FrameDuration = 40 * time.Millisecond
	// AudioFrameDuration is one Opus packet.
	AudioFrameDuration = 20 * time.Millisecond
	// SampleRate is the rate of the speech queue.
	SampleRate = 16000
	// TickSamples is the speech one tick consumes: 40 ms at 16 kHz.
	TickSamples = SampleRate * int(FrameDuration/time.Millisecond) / 1000
	// LatencyTicks is the most ticks the tracks can lag the speech queue:
	// the delay line of a model with the whole 200 ms window as look-ahead
	// and a margin of a whole tick (DelayTicks). A pipeline's own is
	// Pipeline.Delay.
	LatencyTicks = 6
	// Latency is LatencyTicks as a duration.
	Latency = LatencyTicks * FrameDuration

	// DefaultMaxQueue bounds the queued speech. A WAV file longer than the
	// queue's bound, by its header, is refused before it is decoded; the
	// control plane refuses it too, with wav.Probe and the same limit.
	DefaultMaxQueue = wav.MaxUploadDuration
	// DefaultMaxPendingText bounds the text waiting for synthesis, in
	// bytes.
	DefaultMaxPendingText = 64 << 10
	// DefaultMaxLive bounds the speech queued when live audio (PushPCM)
	// arrives: a microphone streamed in real time is never more than a
	// few packets ahead of the media clock, so a publisher that sends
	// faster than real time loses its newest audio instead of filling the
	// queue.
	DefaultMaxLive = 30 * time.Second
	// DefaultEnergyThreshold is the RMS (full scale 1) below which 40 ms of
	// audio counts as silence: about −50 dBFS.
	DefaultEnergyThreshold = 0.003
)

// Error is the type of this package's sentinel errors.
type Error string

// Error implements error.
func (e Error) Error() string { return string(e) }

const (
	// ErrQueueFull: the speech queue holds its maximum.
	ErrQueueFull Error = "pipeline: speech queue full"
	// ErrClosed: the pipeline was closed or its Run ended.
	ErrClosed Error = "pipeline: closed"
	// ErrConfig: invalid Options.
	ErrConfig Error = "pipeline: invalid options"
	// ErrBadAudio: PushAudio's WAV could not be decoded, or its header
	// says it is longer than the queue's bound.
	ErrBadAudio Error = "pipeline: bad audio"
	// ErrOverBudget: the input would take the shared Budget past its
	// limit; nothing was queued.
	ErrOverBudget Error = "pipeline: worker input budget exhausted"
)

// Sample is one encoded media sample for the transport.
type Sample struct {
	// Data is the VP8 frame or Opus packet; the receiver may keep it but
	// must not modify it (idle video frames are shared by every session
	// of an avatar: see IdleVideo).
	Data []byte
	// Duration is the sample's length: 40 ms (video) or 20 ms (audio).
	Duration time.Duration
	// Timestamp is the sample's time on the media clock, from the session's
	// start (tick 0). Audio and video share it.
	Timestamp time.Duration
	// Keyframe is set on VP8 keyframes.
	Keyframe bool
}

// Sink receives the encoded tracks, from the pipeline's media goroutine, in
// timestamp order. An error from it ends Run.
type Sink interface {
	WriteVideo(sample Sample) error
	WriteAudio(sample Sample) error
}

// EventKind says what happened.
type EventKind int

const (
	// SpeakingStarted: the first frame of queued speech was sent.
	SpeakingStarted EventKind = iota + 1
	// SpeakingEnded: the queue ran dry (or was interrupted) and the last
	// frame of speech was sent.
	SpeakingEnded
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case SpeakingStarted:
		return "speaking-started"
	case SpeakingEnded:
		return "speaking-ended"
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is a change of the session's speaking state.
type Event struct {
	Kind EventKind
	// Timestamp is the media time of the frame where it happened.
	Timestamp time.Duration
}

// Options configures a Pipeline.
type Options struct {
	// Avatar is the avatar pack (required).
	Avatar *avatar.Pack
	// Model is the lip-sync model (required): the pipeline runs it one
	// frame at a time from its media goroutine; its look-ahead (at most
	// lipsync.MaxLookAhead) sizes the delay line. Close hands it to
	// ReleaseModel.
	Model lipsync.Model
	// ReleaseModel gives the model back (to a pool, say); nil means Close
	// closes it.
	ReleaseModel func(lipsync.Model)
	// TTS speaks Speak's text; nil makes Speak fail.
	TTS tts.Synthesizer
	// Voice is the TTS voice ("" for the engine's default).
	Voice string
	// Sink receives the tracks (required).
	Sink Sink
	// Clock paces the ticks; nil means RealClock.
	Clock Clock
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// OnEvent, if set, is called from the media goroutine on speaking
	// changes; it must not block.
	OnEvent func(Event)
	// MaxQueue bounds the queued speech; 0 means DefaultMaxQueue.
	MaxQueue time.Duration
	// MaxPendingText bounds the text waiting for synthesis, in bytes; 0
	// means DefaultMaxPendingText.
	MaxPendingText int
	// MaxLive is how much queued speech live audio (PushPCM) may find and
	// still be queued; 0 means DefaultMaxLive (at most MaxQueue).
	MaxLive time.Duration
	// Budget, if set, is shared by the worker's pipelines: each counts its
	// queued input there, and new input that does not fit is refused
	// with ErrOverBudget.
	Budget *Budget
	// ProcessingMargin is the time rendering one frame takes, which the
	// delay line makes room for (see delay.go); 0 means New measures it
	// with a warm-up render of the avatar's first frame (crop, model,
	// composite; the second of two, the first may find a cold context).
	// It is bounded to MaxMargin.
	ProcessingMargin time.Duration
	// EnergyThreshold is the silence gate's RMS; 0 means
	// DefaultEnergyThreshold.
	EnergyThreshold float64
	// VideoBitrate and AudioBitrate (bit/s); 0 means the codec defaults.
	VideoBitrate, AudioBitrate int
	// ObserveInference, if set, is called from the media goroutine with the
	// duration of every model run (for metrics); it must not block.
	ObserveInference func(time.Duration)
	// ObserveEncode, if set, is called from the media goroutine with the
	// duration of every VP8 encode (for metrics); it must not block.
	ObserveEncode func(time.Duration)
	// ObserveLate, if set, is called from the media goroutine when a tick
	// found frames overdue: late is how many were sent behind their time
	// to catch up, skipped how many were not sent at all (a longer stall);
	// it must not block.
	ObserveLate func(late, skipped int64)
	// ObserveSynthesis, if set, is called from the synthesis goroutine with
	// the time from a text's synthesis start to its first audio (for
	// metrics); it must not block.
	ObserveSynthesis func(time.Duration)

	// IdleVideo, if set, is the avatar's shared idle loop, encoded at
	// this pipeline's frame size and VideoBitrate: idle frames are sent
	// from it instead of being encoded here (see IdleVideo). Close
	// releases it.
	IdleVideo IdleVideo

	// tickHook, for tests, runs at the start of every tick.
	tickHook func(tick int64)
}

// Pipeline is one session's media pipeline. Speak, PushAudio, Interrupt,
// RequestKeyframe and Status are safe for concurrent use with Run.
type Pipeline struct {
	opt   Options
	log   *slog.Logger
	input input

	// Media state, owned by Run's media goroutine.
	vp8     *codec.VP8Encoder
	opus    *codec.OpusEncoder
	comps   map[image.Rectangle]*composite.Compositor
	mel     *melspec.Extractor
	media   mediaState
	delay   Delay
	closers []func() error
}

// New checks opt and builds the encoders; the pipeline runs with Run.
func New(opt Options) (*Pipeline, error) {
	if opt.Avatar == nil || opt.Model == nil || opt.Sink == nil {
		return nil, fmt.Errorf("%w: Avatar, Model and Sink are required", ErrConfig)
	}
	if err := opt.Model.Shape().Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if opt.ProcessingMargin < 0 {
		return nil, fmt.Errorf("%w: negative processing margin %v", ErrConfig, opt.ProcessingMargin)
	}
	if opt.Clock == nil {
		opt.Clock = RealClock{}
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.MaxQueue <= 0 {
		opt.MaxQueue = DefaultMaxQueue
	}
	if opt.EnergyThreshold <= 0 {
		opt.EnergyThreshold = DefaultEnergyThreshold
	}
	if opt.MaxPendingText <= 0 {
		opt.MaxPendingText = DefaultMaxPendingText
	}
	if opt.MaxLive <= 0 {
		opt.MaxLive = DefaultMaxLive
	}
	opt.MaxLive = min(opt.MaxLive, opt.MaxQueue)
	p := &Pipeline{opt: opt, log: opt.Logger, mel: melspec.New()}
	p.input.init(samplesOf(opt.MaxQueue), samplesOf(opt.MaxLive), opt.MaxPendingText, opt.Budget)
	if err := p.build(); err != nil {
		_ = p.closeEncoders()
		return nil, err
	}
	margin := min(opt.ProcessingMargin, MaxMargin)
	if margin == 0 {
		var err error
		if margin, err = p.measureMargin(); err != nil {
			// A model that fails fails the session when it renders a
			// speaking frame, as before; until then, the widest margin.
			p.log.Warn("pipeline: no processing margin measured; using the largest", "err", err, "margin", MaxMargin)
			margin = MaxMargin
		}
	}
	la := opt.Model.Shape().LookAhead
	p.delay = Delay{Ticks: DelayTicks(la, margin), LookAhead: la, Margin: margin}
	p.media.initDelay(p.delay.Ticks)
	p.log.Debug("delay line", "ticks", p.delay.Ticks, "look_ahead", la, "margin", margin)
	return p, nil
}

// build makes the compositors (one per distinct face box), the encoders and
// the resampler.
func (p *Pipeline) build() error {
	pack, size := p.opt.Avatar, p.opt.Model.Shape().FaceSize
	p.comps = make(map[image.Rectangle]*composite.Compositor)
	for i := range pack.Len() {
		box := pack.Box(i)
		if _, ok := p.comps[box]; ok {
			continue
		}
		c, err := composite.New(composite.Config{FrameWidth: pack.Width(), FrameHeight: pack.Height(), Box: box, Size: size})
		if err != nil {
			return fmt.Errorf("pipeline: compositor for frame %d box %v: %w", i, box, err)
		}
		p.comps[box] = c
	}
	vp8, err := codec.NewVP8Encoder(codec.VP8Options{Width: pack.Width(), Height: pack.Height(), Bitrate: p.opt.VideoBitrate})
	if err != nil {
		return fmt.Errorf("pipeline: video encoder: %w", err)
	}
	p.vp8 = vp8
	p.closers = append(p.closers, vp8.Close)
	opus, err := codec.NewOpusEncoder(codec.OpusOptions{Channels: 1, Bitrate: p.opt.AudioBitrate, SampleRate: SampleRate})
	if err != nil {
		return fmt.Errorf("pipeline: audio encoder: %w", err)
	}
	p.opus = opus
	p.closers = append(p.closers, opus.Close)
	return p.media.init(p, pack.Width(), pack.Height())
}

// Close releases the encoders and the model. Call it after Run has
// returned; it is idempotent.
func (p *Pipeline) Close() error {
	p.input.close()
	err := p.closeEncoders()
	if iv := p.opt.IdleVideo; iv != nil {
		p.opt.IdleVideo = nil
		iv.Release()
	}
	if c := p.opt.Model; c != nil {
		p.opt.Model = nil
		if p.opt.ReleaseModel != nil {
			p.opt.ReleaseModel(c)
		} else if cerr := c.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("pipeline: close model: %w", cerr))
		}
	}
	return err
}

func (p *Pipeline) closeEncoders() error {
	var errs []error
	for _, c := range p.closers {
		errs = append(errs, c())
	}
	p.closers = nil
	return errors.Join(errs...)
}

// RequestKeyframe makes the next video frame a keyframe (a viewer joined or
// lost packets).
func (p *Pipeline) RequestKeyframe() { p.media.keyframe.Store(true) }

// Status is a snapshot of the pipeline.
type Status struct {
	// Speaking: the last frame sent carried speech.
	Speaking bool
	// Queued is the speech waiting to be spoken (not counting synthesis
	// still running).
	Queued time.Duration
	// Synthesizing: text is queued or being synthesised.
	Synthesizing bool
	// Frames is the number of video frames sent.
	Frames uint64
	// Keyframes is the number of those that were keyframes.
	Keyframes uint64
	// Shared is the number of those sent from the shared idle loop
	// (Options.IdleVideo) rather than encoded by this pipeline.
	Shared uint64
	// Inferred is the number of those the model rendered (the rest were
	// idle frames, skipped by the energy gate).
	Inferred uint64
	// AudioPackets is the number of Opus packets sent.
	AudioPackets uint64
	// Buffered is the input held in memory, in bytes: queued samples (and
	// those being decoded) and text waiting for synthesis.
	Buffered int64
}

// Status reports the pipeline's state.
func (p *Pipeline) Status() Status {
	q, syn := p.input.state()
	return Status{
		Speaking:     p.media.speaking.Load(),
		Queued:       time.Duration(q) * time.Second / SampleRate,
		Synthesizing: syn,
		Frames:       p.media.frames.Load(),
		Keyframes:    p.media.keyframes.Load(),
		Inferred:     p.media.inferCount.Load(),
		Shared:       p.media.sharedFrames.Load(),
		AudioPackets: p.media.audioPackets.Load(),
		Buffered:     p.input.buffered.Load(),
	}
}

// CloseInput refuses any further input (ErrClosed) and gives the bytes the
// pipeline holds back to its Budget at once; what is queued is still
// played until Run is stopped. For a session being shed, whose memory is
// about to be freed.
func (p *Pipeline) CloseInput() { p.input.close() }

// Buffered is the input the pipeline holds in memory, in bytes (what it
// counts in Options.Budget); one atomic load.
func (p *Pipeline) Buffered() int64 { return p.input.buffered.Load() }

// samplesOf is d of 16 kHz audio in samples.
func samplesOf(d time.Duration) int {
	return int(d / time.Millisecond * SampleRate / 1000)
}
