package apiclient

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []sseMessage
		err  bool // the stream ends in an error rather than io.EOF
	}{
		{
			name: "one event",
			in:   "data: {\"id\":\"e1\"}\n\n",
			want: []sseMessage{{event: "message", data: `{"id":"e1"}`}},
		},
		{
			name: "fields, comments and keep-alives",
			in:   ": keep-alive\n\nid: 7\nevent: session.ready\nretry: 1000\ndata: {}\n\n:ping\n\n",
			want: []sseMessage{{event: "session.ready", id: "7", data: "{}"}},
		},
		{
			name: "multi-line data joined with LF",
			in:   "data: {\"a\":\ndata: 1}\n\n",
			want: []sseMessage{{event: "message", data: "{\"a\":\n1}"}},
		},
		{
			name: "no space after colon, and field without colon",
			in:   "data:x\ndata\n\n",
			want: []sseMessage{{event: "message", data: "x\n"}},
		},
		{
			name: "only one leading space is removed",
			in:   "data:  two\n\n",
			want: []sseMessage{{event: "message", data: " two"}},
		},
		{
			name: "CRLF and lone CR line endings",
			in:   "data: a\r\n\r\ndata: b\r\rdata: c\n\n",
			want: []sseMessage{
				{event: "message", data: "a"},
				{event: "message", data: "b"},
				{event: "message", data: "c"},
			},
		},
		{
			name: "BOM at start",
			in:   "\uFEFFdata: x\n\n",
			want: []sseMessage{{event: "message", data: "x"}},
		},
		{
			name: "event without data is not dispatched, and does not leak fields",
			in:   "event: ping\n\ndata: y\n\n",
			want: []sseMessage{{event: "message", data: "y"}},
		},
		{
			name: "unterminated event at EOF is dropped",
			in:   "data: a\n\ndata: b\n",
			want: []sseMessage{{event: "message", data: "a"}},
		},
		{
			name: "id with NUL is ignored",
			in:   "id: a\x00b\ndata: z\n\n",
			want: []sseMessage{{event: "message", data: "z"}},
		},
		{
			name: "oversized line",
			in:   "data: " + strings.Repeat("x", maxEventBytes+1) + "\n\n",
			err:  true,
		},
		{
			name: "oversized event across lines",
			in:   strings.Repeat("data: "+strings.Repeat("x", 1000)+"\n", maxEventBytes/1000+1) + "\n",
			err:  true,
		},
		{
			name: "empty stream",
			in:   "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// OneByteReader exercises every split point, CR at a buffer end included.
			readers := []io.Reader{strings.NewReader(tt.in)}
			if len(tt.in) < 4096 { // byte-at-a-time rescans the buffer: quadratic
				readers = append(readers, iotest.OneByteReader(strings.NewReader(tt.in)))
			}
			for _, r := range readers {
				sr := newSSEReader(r)
				var got []sseMessage
				var err error
				for {
					var m sseMessage
					if m, err = sr.next(); err != nil {
						break
					}
					got = append(got, m)
				}
				if tt.err != !errors.Is(err, io.EOF) {
					t.Fatalf("end error %v, want error=%v", err, tt.err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d events %+v, want %+v", len(got), got, tt.want)
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Fatalf("event %d = %+v, want %+v", i, got[i], tt.want[i])
					}
				}
			}
		})
	}
}
