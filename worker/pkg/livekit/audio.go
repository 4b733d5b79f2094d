package livekit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/resample"
	lksdk "github.com/livekit/server-sdk-go/v2"
)

// streamFormat reads and checks a byte stream's sample_rate and
// num_channels attributes.
func streamFormat(attrs map[string]string) (rate, channels int, err error) {
	rate, err = strconv.Atoi(attrs[AttrSampleRate])
	if err != nil || rate < minSampleRate || rate > maxSampleRate {
		return 0, 0, fmt.Errorf("attribute %s %q: must be %d..%d", AttrSampleRate, attrs[AttrSampleRate], minSampleRate, maxSampleRate)
	}
	channels, err = strconv.Atoi(attrs[AttrNumChannels])
	if err != nil || channels < 1 || channels > maxChannels {
		return 0, 0, fmt.Errorf("attribute %s %q: must be 1..%d", AttrNumChannels, attrs[AttrNumChannels], maxChannels)
	}
	return rate, channels, nil
}

// onAudioStream is the lk.audio_stream handler (the SDK runs it on a
// goroutine of its own per stream): one speech segment from the agent.
func (a *Avatar) onAudioStream(r *lksdk.ByteStreamReader, from string) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.wg.Add(1)
	a.mu.Unlock()
	defer a.wg.Done()
	if agent := a.lookupAgent(); agent == "" || from != agent {
		a.log.Warn("audio stream from a participant that is not the agent: ignored", "from", from, "agent", agent)
		drain(r)
		return
	}
	// Segments are played in the order they arrive, one read at a time.
	a.readMu.Lock()
	defer a.readMu.Unlock()
	rate, channels, err := streamFormat(r.Info.Attributes)
	if err != nil {
		a.log.Warn("audio stream refused", "err", err)
		drain(r)
		return
	}
	seg := a.play.begin()
	if err := a.readSegment(r, seg, rate, channels); err != nil {
		a.log.Warn("audio stream cut short", "err", err)
		drain(r)
	}
	a.play.close(seg)
}

// readSegment decodes a segment's PCM, resamples it to 16 kHz mono and
// queues it, at most MaxLead ahead of its playback.
func (a *Avatar) readSegment(r io.Reader, seg *segment, rate, channels int) error {
	rs, err := resample.New(rate, pipeline.SampleRate)
	if err != nil {
		return fmt.Errorf("resample %d Hz: %w", rate, err)
	}
	frame := 2 * channels
	buf := make([]byte, 32<<10)
	var carry []byte // an incomplete frame from the previous read
	var mono, out []float32
	var total int64
	limit := int64(maxSegment / time.Second * pipeline.SampleRate)
	for {
		n, rerr := r.Read(buf)
		data := append(carry, buf[:n]...)
		whole := len(data) / frame * frame
		carry = append(carry[:0], data[whole:]...)
		mono = downmix(mono[:0], data[:whole], channels)
		out = rs.Process(out[:0], mono)
		if errors.Is(rerr, io.EOF) {
			out = rs.Flush(out)
		}
		total += int64(len(out))
		if total > limit {
			return fmt.Errorf("segment longer than %s", maxSegment)
		}
		if err := a.push(seg, out); err != nil {
			return err
		}
		switch {
		case errors.Is(rerr, io.EOF):
			return nil
		case rerr != nil:
			return fmt.Errorf("read: %w", rerr)
		}
	}
}

// push queues pcm for seg in small pieces, waiting while more than MaxLead
// of the agent's audio waits to be played. A cleared segment takes no more.
func (a *Avatar) push(seg *segment, pcm []float32) error {
	lead := int64(a.opt.MaxLead / time.Millisecond * pipeline.SampleRate / 1000)
	for len(pcm) > 0 {
		for a.play.ahead() > lead {
			select {
			case <-a.ctx.Done():
				return errors.New("avatar closed")
			case <-time.After(leadPoll):
			}
		}
		n := min(len(pcm), pushChunk)
		if a.play.pushed(seg) == 0 {
			n = firstChunkSamples // its mark is the segment's first sample going out
		}
		if !a.play.push(seg, pcm[:n], a.opt.Hooks.PushSpeech) {
			return nil // cleared: the caller reads the rest of the stream and drops it
		}
		pcm = pcm[n:]
	}
	return nil
}

// downmix appends the mean of each s16le frame's channels to dst.
func downmix(dst []float32, b []byte, channels int) []float32 {
	for i := 0; i+2*channels <= len(b); i += 2 * channels {
		var sum float32
		for c := range channels {
			sum += float32(int16(binary.LittleEndian.Uint16(b[i+2*c:])))
		}
		dst = append(dst, sum/float32(channels)/32768)
	}
	return dst
}

// drain reads a stream to its end, dropping it.
func drain(r io.Reader) {
	_, _ = io.Copy(io.Discard, r)
}
