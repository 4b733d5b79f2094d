package tts

import (
	"context"
	"fmt"
	"iter"
)

// Chunk is one synthesised piece of a text.
type Chunk struct {
	// Index is the piece's position among the text's pieces, from 0.
	Index int
	// Text is the piece that was spoken.
	Text string
	// Audio is its speech at SampleRate.
	Audio Audio
}

// result is what one synthesis goroutine hands back.
type result struct {
	audio Audio
	err   error
}

// start synthesises text in a new goroutine; the returned channel (buffered,
// so the goroutine never blocks) receives the one result.
func start(ctx context.Context, syn Synthesizer, text, voice string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		a, err := syn.Synthesize(ctx, text, voice)
		ch <- result{a, err}
	}()
	return ch
}

// Stream splits text with the zero Splitter and sends its speech to out;
// see Splitter.Stream.
func Stream(ctx context.Context, syn Synthesizer, text, voice string, out chan<- Chunk) error {
	return Splitter{}.Stream(ctx, syn, text, voice, out)
}

// Stream splits text and sends the speech of each piece to out, in order.
// The next piece is synthesised while the receiver holds the current one:
// piece i+1 starts once out has taken piece i, so at most one piece is
// synthesised ahead of what the receiver has taken. It returns nil when
// every piece was sent, the first synthesis error, or an error wrapping
// ctx.Err() once ctx is done. It does not close out. Its one synthesis
// goroutine has ended by the time it returns (which is why syn must honour
// ctx).
func (s Splitter) Stream(ctx context.Context, syn Synthesizer, text, voice string, out chan<- Chunk) error {
	parts := s.Split(text)
	if len(parts) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	var pending <-chan result
	defer func() {
		cancel()
		if pending != nil {
			<-pending
		}
	}()
	pending = start(ctx, syn, parts[0], voice)
	for i, p := range parts {
		var r result
		select {
		case r = <-pending:
			pending = nil
		case <-ctx.Done():
			return fmt.Errorf("tts: stream stopped before piece %d of %d: %w", i+1, len(parts), ctx.Err())
		}
		if r.err != nil {
			return fmt.Errorf("tts: piece %d of %d: %w", i+1, len(parts), r.err)
		}
		select {
		case out <- Chunk{Index: i, Text: p, Audio: r.audio}:
		case <-ctx.Done():
			return fmt.Errorf("tts: stream stopped before piece %d of %d: %w", i+1, len(parts), ctx.Err())
		}
		if i+1 < len(parts) {
			pending = start(ctx, syn, parts[i+1], voice)
		}
	}
	return nil
}

// Chunks splits text and yields the speech of each piece in order. The next
// piece is synthesised while the loop body handles the current one (a
// lookahead of one piece). The first error (a synthesis error, or one
// wrapping ctx.Err()) is yielded with a zero Chunk and ends the sequence.
// Breaking out of the loop cancels the synthesis in flight; the iterator's
// goroutine has always ended when the loop ends.
func (s Splitter) Chunks(ctx context.Context, syn Synthesizer, text, voice string) iter.Seq2[Chunk, error] {
	return func(yield func(Chunk, error) bool) {
		parts := s.Split(text)
		if len(parts) == 0 {
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		var pending <-chan result
		defer func() {
			cancel()
			if pending != nil {
				<-pending
			}
		}()
		pending = start(ctx, syn, parts[0], voice)
		for i, p := range parts {
			r := <-pending
			pending = nil
			if r.err == nil && ctx.Err() != nil {
				r.err = ctx.Err()
			}
			if r.err != nil {
				yield(Chunk{}, fmt.Errorf("tts: piece %d of %d: %w", i+1, len(parts), r.err))
				return
			}
			if i+1 < len(parts) {
				pending = start(ctx, syn, parts[i+1], voice)
			}
			if !yield(Chunk{Index: i, Text: p, Audio: r.audio}, nil) {
				return
			}
		}
	}
}
