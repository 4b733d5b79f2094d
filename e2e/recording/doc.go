// Package recording tests session recording end to end: the real
// control-plane and worker binaries (bin/), a session that speaks, a
// recording started, listed, stopped and downloaded over the REST API, and
// the downloaded WebM checked with ffprobe and ffmpeg.
package recording
