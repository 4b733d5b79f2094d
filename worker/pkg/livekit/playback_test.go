package livekit

import (
	"encoding/binary"
	"reflect"
	"testing"
)

// fakeQueue stands for the pipeline: it keeps the marks of what was pushed
// and plays (or drops) them on demand.
type fakeQueue struct {
	marks []func()
	drops int
}

func (q *fakeQueue) push(_ []float32, sent func()) bool {
	q.marks = append(q.marks, sent)
	return true
}

func (q *fakeQueue) play(n int) {
	for ; n > 0 && len(q.marks) > 0; n-- {
		m := q.marks[0]
		q.marks = q.marks[1:]
		m()
	}
}

func (q *fakeQueue) interrupt() {
	q.drops += len(q.marks)
	q.marks = nil
}

// TestPlayback drives the tracker through the contract's cases: a segment
// played out, one cleared half-way, an empty one, two back to back, and a
// clear with nothing playing.
func TestPlayback(t *testing.T) {
	const chunk = 1600 // 0.1 s at 16 kHz
	pcm := make([]float32, chunk)
	started := note{started: true}
	finished := func(pos float64, interrupted bool) note { return note{position: pos, interrupted: interrupted} }
	type step struct {
		do    string // begin, push, close, play, clear
		seg   int
		n     int
		notes []note // notifications this step produces
		ahead int64  // the queued samples after the step
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"played to its end", []step{
			{do: "begin"}, {do: "push", n: 3, ahead: 3 * chunk},
			{do: "play", n: 1, notes: []note{started}, ahead: 2 * chunk},
			{do: "close", ahead: 2 * chunk},
			{do: "play", n: 2, notes: []note{finished(0.3, false)}},
		}},
		{"finished only once closed", []step{
			{do: "begin"}, {do: "push", n: 2, ahead: 2 * chunk},
			{do: "play", n: 2, notes: []note{started}},
			{do: "close", notes: []note{finished(0.2, false)}},
		}},
		{"cleared half-way", []step{
			{do: "begin"}, {do: "push", n: 4, ahead: 4 * chunk},
			{do: "play", n: 2, notes: []note{started}, ahead: 2 * chunk},
			{do: "clear", notes: []note{finished(0.2, true)}},
			{do: "push", n: 2}, // the rest of a cleared stream is dropped
			{do: "close"}, {do: "play", n: 2},
		}},
		{"cleared before it started", []step{
			{do: "begin"}, {do: "push", n: 2, ahead: 2 * chunk},
			{do: "clear", notes: []note{finished(0, true)}},
		}},
		{"empty segment", []step{
			{do: "begin"}, {do: "close", notes: []note{finished(0, false)}},
		}},
		{"back to back", []step{
			{do: "begin", seg: 0}, {do: "push", seg: 0, n: 1, ahead: chunk}, {do: "close", seg: 0, ahead: chunk},
			{do: "begin", seg: 1, ahead: chunk}, {do: "push", seg: 1, n: 2, ahead: 3 * chunk}, {do: "close", seg: 1, ahead: 3 * chunk},
			{do: "play", n: 2, notes: []note{started, finished(0.1, false), started}, ahead: chunk},
			{do: "play", n: 1, notes: []note{finished(0.2, false)}},
		}},
		{"clear with nothing playing", []step{
			{do: "clear"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []note
			p := newPlayback(func(n note) { got = append(got, n) })
			q := &fakeQueue{}
			segs := map[int]*segment{}
			for i, st := range tc.steps {
				got = nil
				switch st.do {
				case "begin":
					segs[st.seg] = p.begin()
				case "push":
					for range st.n {
						p.push(segs[st.seg], pcm, q.push)
					}
				case "close":
					p.close(segs[st.seg])
				case "play":
					q.play(st.n)
				case "clear":
					p.clear(q.interrupt)
				}
				if len(got) != len(st.notes) || (len(got) > 0 && !reflect.DeepEqual(got, st.notes)) {
					t.Fatalf("step %d (%s): notes %+v, want %+v", i, st.do, got, st.notes)
				}
				if a := p.ahead(); a != st.ahead {
					t.Fatalf("step %d (%s): %d samples ahead, want %d", i, st.do, a, st.ahead)
				}
			}
		})
	}
}

func TestStreamFormat(t *testing.T) {
	for _, tc := range []struct {
		rate, channels string
		ok             bool
	}{
		{"24000", "1", true}, {"48000", "2", true}, {"8000", "8", true}, {"192000", "1", true},
		{"", "1", false}, {"7999", "1", false}, {"192001", "1", false}, {"abc", "1", false},
		{"16000", "0", false}, {"16000", "9", false}, {"16000", "", false},
	} {
		_, _, err := streamFormat(map[string]string{AttrSampleRate: tc.rate, AttrNumChannels: tc.channels})
		if (err == nil) != tc.ok {
			t.Errorf("rate %q channels %q: %v, want ok=%v", tc.rate, tc.channels, err, tc.ok)
		}
	}
}

func TestDownmix(t *testing.T) {
	var b []byte
	for _, v := range []int16{16384, -16384, 32767, 32767, -32768, 0} {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	got := downmix(nil, b, 2)
	want := []float32{0, 32767.0 / 32768, -0.5}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stereo %v, want %v", got, want)
	}
	if got := downmix(nil, b[:4], 1); !reflect.DeepEqual(got, []float32{0.5, -0.5}) {
		t.Errorf("mono %v", got)
	}
}
