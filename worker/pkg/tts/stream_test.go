package tts

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fakeSynth records calls. Its audio has one sample per byte of text.
type fakeSynth struct {
	mu        sync.Mutex
	started   []string
	active    int
	maxActive int
	voices    []string
	blockOn   string // this text waits for ctx to end
	failOn    string // this text fails
	starts    chan string
}

func newFake() *fakeSynth { return &fakeSynth{starts: make(chan string, 100)} }

func (f *fakeSynth) Synthesize(ctx context.Context, text, voice string) (Audio, error) {
	f.mu.Lock()
	f.started = append(f.started, text)
	f.voices = append(f.voices, voice)
	f.active++
	f.maxActive = max(f.maxActive, f.active)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	f.starts <- text
	switch text {
	case f.blockOn:
		<-ctx.Done()
		return Audio{}, ctx.Err()
	case f.failOn:
		return Audio{}, errors.New("synthesis broke")
	}
	return Audio{Samples: make([]float32, len(text))}, nil
}

func (f *fakeSynth) startedTexts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.started)
}

const fourSentences = "One. Two! Three? Four."

// runStream runs Stream in a goroutine; its error arrives on the returned
// channel, after which out is closed.
func runStream(ctx context.Context, syn Synthesizer, text, voice string, out chan Chunk) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := Stream(ctx, syn, text, voice, out)
		close(out)
		done <- err
	}()
	return done
}

func TestStreamOrder(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := newFake()
	out := make(chan Chunk)
	done := runStream(context.Background(), f, fourSentences, "v1", out)
	var got []string
	for c := range out {
		if c.Index != len(got) || len(c.Audio.Samples) != len(c.Text) {
			t.Errorf("chunk %+v out of order or with the wrong audio", c)
		}
		got = append(got, c.Text)
	}
	if err := <-done; err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want := []string{"One.", "Two!", "Three?", "Four."}
	if !slices.Equal(got, want) || !slices.Equal(f.startedTexts(), want) {
		t.Fatalf("got %q, synthesised %q; want %q", got, f.startedTexts(), want)
	}
	if f.maxActive != 1 || !slices.Equal(f.voices, []string{"v1", "v1", "v1", "v1"}) {
		t.Fatalf("max %d syntheses at once, voices %q", f.maxActive, f.voices)
	}
	if err := Stream(context.Background(), f, " \n ", "", out); err != nil {
		t.Fatalf("Stream of blank text: %v", err)
	}
}

func TestStreamLookaheadOne(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := newFake()
	out := make(chan Chunk)
	done := runStream(context.Background(), f, fourSentences, "v1", out)
	if c := <-out; c.Text != "One." {
		t.Fatalf("first chunk %q", c.Text)
	}
	// While the receiver holds "One.", "Two!" is synthesised, and nothing
	// further.
	<-f.starts
	if s := <-f.starts; s != "Two!" {
		t.Fatalf("second synthesis %q", s)
	}
	time.Sleep(50 * time.Millisecond)
	if s := f.startedTexts(); len(s) != 2 {
		t.Fatalf("synthesised %q while the receiver held the first chunk; want a lookahead of 1", s)
	}
	for range out {
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStreamCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("during synthesis", func(t *testing.T) {
		f := newFake()
		f.blockOn = "Three?"
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out := make(chan Chunk)
		done := runStream(ctx, f, fourSentences, "", out)
		<-out
		<-out
		for s := range f.starts {
			if s == "Three?" {
				break
			}
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Stream did not stop on cancel")
		}
		if _, open := <-out; open {
			t.Fatal("a chunk was sent after the cancel")
		}
	})
	t.Run("receiver gone", func(t *testing.T) {
		f := newFake()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		out := make(chan Chunk) // nobody receives
		err := Stream(ctx, f, fourSentences, "", out)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
	})
}

func TestStreamError(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := newFake()
	f.failOn = "Two!"
	out := make(chan Chunk, 10)
	err := Stream(context.Background(), f, fourSentences, "", out)
	if err == nil || err.Error() != "tts: piece 2 of 4: synthesis broke" {
		t.Fatalf("err = %v", err)
	}
	if len(out) != 1 || !slices.Equal(f.startedTexts(), []string{"One.", "Two!"}) {
		t.Fatalf("%d chunks sent, synthesised %q", len(out), f.startedTexts())
	}
}

func TestChunks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := newFake()
	var got []string
	for c, err := range (Splitter{}).Chunks(context.Background(), f, fourSentences, "") {
		if err != nil {
			t.Fatal(err)
		}
		// The next piece is synthesised while the body runs.
		if c.Index == 0 {
			for _, want := range []string{"One.", "Two!"} {
				select {
				case s := <-f.starts:
					if s != want {
						t.Fatalf("synthesis of %q, want %q", s, want)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("%q is not synthesised while the body handles the first chunk", want)
				}
			}
		}
		got = append(got, c.Text)
	}
	if want := []string{"One.", "Two!", "Three?", "Four."}; !slices.Equal(got, want) {
		t.Fatalf("got %q", got)
	}

	// Breaking out cancels the synthesis in flight and waits for it.
	f = newFake()
	f.blockOn = "Two!"
	for c, err := range (Splitter{}).Chunks(context.Background(), f, fourSentences, "") {
		if err != nil || c.Text != "One." {
			t.Fatalf("chunk %q, %v", c.Text, err)
		}
		break
	}
	f.mu.Lock()
	active := f.active
	f.mu.Unlock()
	if active != 0 {
		t.Fatal("a synthesis is still running after the loop")
	}

	// Cancelling ends the sequence with the context's error.
	f = newFake()
	f.blockOn = "Two!"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errs []error
	for _, err := range (Splitter{}).Chunks(ctx, f, fourSentences, "") {
		cancel()
		errs = append(errs, err)
	}
	if len(errs) != 2 || errs[0] != nil || !errors.Is(errs[1], context.Canceled) {
		t.Fatalf("errors %v, want [nil, context.Canceled]", errs)
	}
}

// Speech starts after the first sentence, not after the whole text.
func TestStreamEspeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newEspeak(t, EspeakOptions{})
	text := "Hello, and welcome. I am the avatar that speaks to you today. " +
		"Every sentence is synthesised while the previous one plays, so you hear me sooner."
	out := make(chan Chunk)
	start := time.Now()
	done := runStream(context.Background(), e, text, "", out)
	var first time.Duration
	var audio time.Duration
	n := 0
	for c := range out {
		if n == 0 {
			first = time.Since(start)
		}
		if c.Index != n || rms(c.Audio.Samples) < 0.01 {
			t.Errorf("chunk %d: index %d, RMS %.4f", n, c.Index, rms(c.Audio.Samples))
		}
		audio += c.Audio.Duration()
		n++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d chunks, want 3", n)
	}
	t.Logf("first of %d chunks after %v; all %v of audio after %v", n, first, audio, time.Since(start))
}
