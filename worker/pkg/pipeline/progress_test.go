package pipeline

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// progressLog records a tracked text's progress calls and the frame count
// at each.
type progressLog struct {
	mu     sync.Mutex
	rest   []string
	frames []uint64
	p      *Pipeline
}

func (l *progressLog) record(rest string) {
	n := l.p.Status().Frames
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rest = append(l.rest, rest)
	l.frames = append(l.frames, n)
}

func (l *progressLog) get() ([]string, []uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.rest), slices.Clone(l.frames)
}

// TestSpeechProgress: a tracked text reports each sentence once its last
// audio has been sent (not when synthesised or taken into the delay line),
// with the sentences still to come, then "" after the last; an interrupted
// text reports nothing.
func TestSpeechProgress(t *testing.T) {
	e := newEnv(t)
	h := e.start(t, nil)
	first, err := e.tts.Synthesize(t.Context(), "One.", "")
	if err != nil {
		t.Fatal(err)
	}
	firstTicks := uint64((first.Duration() + FrameDuration - 1) / FrameDuration)

	log := &progressLog{p: h.p}
	if err := h.p.SpeakTracked("One. Two. Three.", false, log.record); err != nil {
		t.Fatal(err)
	}
	queued := h.waitSynthesized(t)
	if rest, _ := log.get(); len(rest) != 0 {
		t.Fatalf("progress %q before anything was played", rest)
	}
	ticks := int((queued+FrameDuration-1)/FrameDuration) + h.d + 1
	h.tick(t, ticks)
	rest, frames := log.get()
	if want := []string{"Two. Three.", "Three.", ""}; !slices.Equal(rest, want) {
		t.Fatalf("progress %q, want %q", rest, want)
	}
	t.Logf("sentence ends reported after frames %v (first sentence %d ticks, latency %d)", frames, firstTicks, h.d)
	// The first sentence's last samples were taken in tick firstTicks-1
	// (or the next, rounding) and leave h.d later.
	if d := uint64(h.d); frames[0] < firstTicks+d-1 || frames[0] > firstTicks+d+1 {
		t.Fatalf("first sentence reported after %d frames, want about %d", frames[0], firstTicks+d)
	}
	if !slices.IsSorted(frames) || frames[2] > uint64(h.sent) {
		t.Fatalf("frames %v not in order within %d ticks", frames, h.sent)
	}

	cut := &progressLog{p: h.p}
	if err := h.p.SpeakTracked("Four. Five.", false, cut.record); err != nil {
		t.Fatal(err)
	}
	h.waitSynthesized(t)
	h.tick(t, 2)
	h.p.Interrupt()
	h.tick(t, 30)
	if rest, _ := cut.get(); len(rest) != 0 {
		t.Fatalf("an interrupted text reported %q", rest)
	}

	// An untracked text and a text of no words both work; the latter is
	// reported done at once.
	if err := h.p.Speak("Six.", false); err != nil {
		t.Fatal(err)
	}
	empty := &progressLog{p: h.p}
	if err := h.p.SpeakTracked(" … ", false, empty.record); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		h.tick(t, 5)
		if rest, _ := empty.get(); len(rest) > 0 {
			if !slices.Equal(rest, []string{""}) {
				t.Fatalf("a wordless text reported %q", rest)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a wordless text was never reported done")
		}
	}
}

// TestRestsAfterPieces: what is left after each piece is a suffix of the
// text (never longer than it, whatever the splitter joins or cuts).
func TestRestsAfterPieces(t *testing.T) {
	tests := []struct {
		text string
		want []string
	}{
		{"One. Two. Three.", []string{"Two. Three.", "Three.", ""}},
		{"  One.\n\nTwo!  ", []string{"Two!", ""}},
		{"你好。再见。", []string{"再见。", ""}},
		{"Hi. … Bye.", []string{"Bye.", ""}}, // the wordless "…" joins "Hi."
		{"Dr. Smith is in. Yes.", []string{"Yes.", ""}},
		// A sentence past 400 characters is cut after its last space
		// within them (80 words).
		{strings.Repeat("word ", 100) + "end. Next.", []string{strings.Repeat("word ", 20) + "end. Next.", "Next.", ""}},
	}
	for _, tt := range tests {
		if got := restsAfterPieces(tt.text); !slices.Equal(got, tt.want) {
			t.Errorf("restsAfterPieces(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
	// Joined with spaces, 5000 CJK sentences would grow by 4998 characters.
	cjk := strings.Repeat("好。", 5000)
	if rests := restsAfterPieces(cjk); len(rests) != 5000 || rests[0] != cjk[len("好。"):] {
		t.Fatalf("5000 CJK sentences: %d rests, the first of %d bytes", len(rests), len(rests[0]))
	}
}
