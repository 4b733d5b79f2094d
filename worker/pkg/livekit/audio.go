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
// Segments play in the order they arrive, one read at a time. A stream
// whose trailer never comes (a lost packet) ends when a newer stream
// arrives and its data stops, or after StreamIdleTimeout without data.
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
		return // the SDK keeps its bytes until the room closes; nothing reads them
	}
	rate, channels, err := streamFormat(r.Info.Attributes)
	if err != nil {
		a.log.Warn("audio stream refused", "err", err)
		return
	}
	newer := make(chan struct{})
	a.mu.Lock()
	if a.open != nil {
		close(a.open) // the stream being read has a successor
	}
	a.open = newer
	a.mu.Unlock()

	a.readMu.Lock()
	defer a.readMu.Unlock()
	seg := a.play.begin()
	if err := a.readSegment(r, seg, rate, channels, newer); err != nil {
		a.log.Warn("audio stream cut short", "err", err)
	}
	a.play.close(seg)
	a.mu.Lock()
	if a.open == newer {
		a.open = nil
	}
	a.mu.Unlock()
}

// pump reads r into chunks until its end (then closes chunks) or until
// stop; a Read blocked on a stream whose trailer was lost returns when the
// room is left (Close).
func (a *Avatar) pump(r io.Reader, chunks chan<- []byte, stop <-chan struct{}) {
	defer a.wg.Done()
	defer close(chunks)
	for {
		buf := make([]byte, 32<<10)
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case chunks <- buf[:n]:
			case <-stop:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readSegment decodes a segment's PCM, resamples it to 16 kHz mono and
// queues it, at most MaxLead ahead of its playback. newer is closed when a
// later stream arrived: then this one ends as soon as its data stops.
func (a *Avatar) readSegment(r io.Reader, seg *segment, rate, channels int, newer <-chan struct{}) error {
	rs, err := resample.New(rate, pipeline.SampleRate)
	if err != nil {
		return fmt.Errorf("resample %d Hz: %w", rate, err)
	}
	chunks, stop := make(chan []byte, 4), make(chan struct{})
	defer close(stop)
	a.wg.Add(1)
	go a.pump(r, chunks, stop)

	frame := 2 * channels
	var carry []byte // an incomplete frame from the previous chunk
	var mono, out []float32
	var total int64
	limit := int64(maxSegment / time.Second * pipeline.SampleRate)
	idle := time.NewTimer(a.opt.StreamIdleTimeout)
	defer idle.Stop()
	superseded := newer
	for {
		var data []byte
		select {
		case b, ok := <-chunks:
			if !ok {
				return a.push(seg, rs.Flush(out[:0])) // the trailer: the segment is complete
			}
			data = b
		case <-superseded:
			// Wait only for data already on its way.
			superseded = nil
			idle.Reset(supersededWait)
			continue
		case <-idle.C:
			a.log.Warn("audio stream ended without its trailer", "newer_stream", superseded == nil)
			return a.push(seg, rs.Flush(out[:0]))
		case <-a.ctx.Done():
			return errors.New("avatar closed")
		}
		data = append(carry, data...)
		whole := len(data) / frame * frame
		carry = append(carry[:0], data[whole:]...)
		mono = downmix(mono[:0], data[:whole], channels)
		out = rs.Process(out[:0], mono)
		if total += int64(len(out)); total > limit {
			return fmt.Errorf("segment longer than %s", maxSegment)
		}
		if err := a.push(seg, out); err != nil {
			return err
		}
		wait := a.opt.StreamIdleTimeout
		if superseded == nil {
			wait = supersededWait
		}
		idle.Reset(wait)
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
