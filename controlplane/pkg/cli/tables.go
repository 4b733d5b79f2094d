package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// newTable returns a tabwriter with avatarctl's column layout. Flush it.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one table row of cells.
func row(tw io.Writer, cells ...string) {
	for i := range cells {
		cells[i] = cell(cells[i])
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// cell makes a value safe for one table cell: "-" when empty, and control
// characters (tabs, newlines, terminal escapes) replaced, so a value from
// the server cannot break the layout or drive the terminal.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// formatTime prints an API time in UTC to the second; "-" for none.
func formatTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// formatGPUs prints a worker's GPUs as "index:used/slots", space-separated,
// with "(auto)" after a slot count the worker measured.
func formatGPUs(gpus []apiv1.GPU) string {
	parts := make([]string, 0, len(gpus))
	for _, g := range gpus {
		p := fmt.Sprintf("%d:%d/%d", g.Index, g.Used, g.Slots)
		if g.Capacity != nil {
			p += "(auto)"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

// sessionGPU prints a session's GPU index, "-" while it has no worker.
func sessionGPU(s apiv1.Session) string {
	if s.WorkerID == "" {
		return "-"
	}
	return strconv.FormatUint(uint64(s.GPU), 10)
}

// renderWorkers prints the workers table.
func renderWorkers(w io.Writer, workers []apiv1.Worker) error {
	tw := newTable(w)
	row(tw, "ID", "STATE", "ADDRESS", "GPUS", "SESSIONS")
	for _, wk := range workers {
		row(tw, wk.ID, wk.State, wk.Address, formatGPUs(wk.GPUs), strconv.Itoa(wk.Sessions))
	}
	return tw.Flush()
}

// renderSessions prints the sessions table.
func renderSessions(w io.Writer, sessions []apiv1.Session) error {
	tw := newTable(w)
	row(tw, "ID", "STATE", "WORKER", "GPU", "AVATAR", "CREATED", "END_REASON")
	for _, s := range sessions {
		created := s.CreatedAt
		row(tw, s.ID, s.State, s.WorkerID, sessionGPU(s), s.Avatar, formatTime(&created), s.EndReason)
	}
	return tw.Flush()
}

// renderWorker prints one worker as fields, then its GPUs as a table.
func renderWorker(w io.Writer, wk apiv1.Worker) error {
	tw := newTable(w)
	row(tw, "ID:", wk.ID)
	row(tw, "STATE:", wk.State)
	row(tw, "ADDRESS:", wk.Address)
	row(tw, "SESSIONS:", strconv.Itoa(wk.Sessions))
	if wk.RecordingStore != "" {
		row(tw, "RECORDINGS:", wk.RecordingStore)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(wk.GPUs) == 0 {
		_, err := fmt.Fprintln(w, "GPUS:      -")
		return err
	}
	if _, err := fmt.Fprintln(w, "GPUS:"); err != nil {
		return err
	}
	tw = newTable(w)
	row(tw, "  INDEX", "NAME", "USED", "SLOTS")
	for _, g := range wk.GPUs {
		slots := strconv.FormatUint(uint64(g.Slots), 10)
		if g.Capacity != nil {
			slots += " (auto)"
		}
		row(tw, "  "+strconv.FormatUint(uint64(g.Index), 10), g.Name, strconv.FormatUint(uint64(g.Used), 10), slots)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return renderCapacity(w, wk.GPUs)
}

// renderCapacity prints how each measured GPU's slot count came about.
func renderCapacity(w io.Writer, gpus []apiv1.GPU) error {
	for _, g := range gpus {
		c := g.Capacity
		if c == nil {
			continue
		}
		times := make([]string, 0, len(c.Timings))
		for _, t := range c.Timings {
			times = append(times, fmt.Sprintf("b%d %.3f", t.Batch, t.MSPerFrame))
		}
		if _, err := fmt.Fprintf(w, "CAPACITY OF GPU %d: %d slots, measured on %s at %s in %s (bound: %s)\n"+
			"  ms per frame: %s\n  rule: %s\n",
			g.Index, g.Slots, cell(c.Device), formatTime(&c.MeasuredAt),
			time.Duration(c.TookMS*float64(time.Millisecond)).Round(time.Millisecond), cell(c.Bound),
			cell(strings.Join(times, ", ")), cell(c.Rule)); err != nil {
			return err
		}
	}
	return nil
}

// renderSession prints one session as fields, the WHEP URL and viewer
// token included (what a viewer needs).
func renderSession(w io.Writer, s apiv1.Session) error {
	created := s.CreatedAt
	tw := newTable(w)
	row(tw, "ID:", s.ID)
	row(tw, "STATE:", s.State)
	row(tw, "WORKER:", s.WorkerID)
	row(tw, "GPU:", sessionGPU(s))
	row(tw, "AVATAR:", s.Avatar)
	row(tw, "VOICE:", s.Voice)
	row(tw, "LABELS:", formatLabels(s.Labels))
	row(tw, "IDLE_TIMEOUT:", formatSeconds(s.IdleTimeoutSeconds))
	row(tw, "MAX_DURATION:", formatSeconds(s.MaxDurationSeconds))
	if s.RestartPolicy != "" {
		row(tw, "RESTART:", formatRestart(s))
	}
	row(tw, "CREATED:", formatTime(&created))
	row(tw, "ENDED:", formatTime(s.EndedAt))
	row(tw, "END_REASON:", s.EndReason)
	if s.EndMessage != "" {
		row(tw, "END_MESSAGE:", s.EndMessage)
	}
	if s.Moves > 0 || s.LostAt != nil {
		row(tw, "MOVES:", formatMoves(s))
	}
	row(tw, "WHEP_URL:", s.WHEPURL)
	row(tw, "VIEWER_TOKEN:", s.ViewerToken)
	if s.LiveKit != nil {
		row(tw, "LIVEKIT:", formatLiveKit(*s.LiveKit))
	}
	if st := s.Stats; st != nil {
		// Media figures, only for a ready session whose worker answered.
		row(tw, "VIEWERS:", strconv.Itoa(len(st.Viewers)))
		row(tw, "PUBLISHERS:", strconv.FormatUint(uint64(st.Publishers), 10))
		row(tw, "VIDEO_FRAMES:", strconv.FormatUint(st.VideoFramesSent, 10))
	}
	return tw.Flush()
}

// formatLiveKit prints the session's LiveKit room and its connection:
// "wss://lk (joined, 2 reconnects, last: connection lost)"; the counts only
// when the worker reported them.
func formatLiveKit(lk apiv1.LiveKitState) string {
	out := lk.URL + " (" + lk.State
	if lk.Reconnects != nil {
		out += ", " + strconv.FormatUint(uint64(*lk.Reconnects), 10) + " reconnects"
	}
	if lk.LastError != "" {
		out += ", last: " + lk.LastError
	}
	return out + ")"
}

// formatRestart prints the restart policy and, when the session is
// re-placed, how long it may wait for a slot: "on_worker_lost (wait 1m0s)".
func formatRestart(s apiv1.Session) string {
	if s.RestartPolicy == apiv1.RestartNever || s.ReplaceTimeoutSeconds == 0 {
		return s.RestartPolicy
	}
	return s.RestartPolicy + " (wait " + formatSeconds(s.ReplaceTimeoutSeconds) + ")"
}

// formatMoves prints the session's moves and the last one: "1 (from w1,
// worker_lost)", or the one in progress while it is being re-placed.
func formatMoves(s apiv1.Session) string {
	out := strconv.FormatUint(uint64(s.Moves), 10)
	if s.MovedFrom != "" {
		out += " (from " + s.MovedFrom + ", " + s.MoveReason + ")"
	}
	if s.LostAt != nil {
		out += "; lost " + formatTime(s.LostAt) + ", being re-placed"
	}
	return out
}

// formatLabels prints labels as "k=v" pairs sorted by key.
func formatLabels(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// formatSeconds prints a seconds count as a Go duration; "-" for 0.
func formatSeconds(secs uint32) string {
	if secs == 0 {
		return "-"
	}
	return (time.Duration(secs) * time.Second).String()
}
