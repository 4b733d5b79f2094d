package apiclient

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
)

// sseMessage is one dispatched server-sent event.
type sseMessage struct {
	event string // the "event:" field, "message" when absent
	id    string // the "id:" field
	data  string // the "data:" lines joined with "\n"
}

// sseReader parses a text/event-stream body as the HTML standard
// describes: lines end in CRLF, LF or CR; a blank line dispatches the
// event; ":" starts a comment (keep-alives); "data:" lines accumulate; an
// event with no data is not dispatched.
type sseReader struct {
	sc        *bufio.Scanner
	firstLine bool
}

// newSSEReader reads events from r, each at most maxEventBytes.
func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventBytes)
	sc.Split(scanSSELines)
	return &sseReader{sc: sc, firstLine: true}
}

// next returns the next event with data. It returns io.EOF at the end of
// the stream; an event cut off by the end is dropped, as the standard says.
func (r *sseReader) next() (sseMessage, error) {
	var (
		msg     sseMessage
		data    strings.Builder
		hasData bool
	)
	for r.sc.Scan() {
		line := r.sc.Text()
		if r.firstLine {
			line = strings.TrimPrefix(line, "\uFEFF")
			r.firstLine = false
		}
		if line == "" {
			if !hasData {
				msg = sseMessage{}
				continue
			}
			msg.data = strings.TrimSuffix(data.String(), "\n")
			if msg.event == "" {
				msg.event = "message"
			}
			return msg, nil
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if data.Len()+len(value)+1 > maxEventBytes {
				return sseMessage{}, fmt.Errorf("event larger than %d bytes", maxEventBytes)
			}
			data.WriteString(value)
			data.WriteByte('\n')
			hasData = true
		case "event":
			msg.event = value
		case "id":
			if !strings.ContainsRune(value, 0) {
				msg.id = value
			}
		}
		// "retry" and unknown fields are ignored: the client does not
		// reconnect on its own.
	}
	if err := r.sc.Err(); err != nil {
		return sseMessage{}, err
	}
	return sseMessage{}, io.EOF
}

// scanSSELines is a bufio.SplitFunc for SSE lines ending in CRLF, LF or a
// lone CR. A CR at the end of the buffered data waits for the next byte to
// tell CRLF from CR.
func scanSSELines(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		switch {
		case i+1 < len(data) && data[i+1] == '\n':
			return i + 2, data[:i], nil
		case i+1 < len(data) || atEOF:
			return i + 1, data[:i], nil
		default:
			return 0, nil, nil
		}
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}
