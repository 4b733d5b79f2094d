// Package avsync measures lip sync from outside (README, "Latency
// contract"): it starts the built binaries (binfleet), plays a WAV of loud
// voiced bursts and silences into a session of the default avatar, records
// at a real Pion WHEP viewer the decoded video frames and the Opus packets
// with their arrival times and the RTCP sender reports, maps both tracks'
// RTP timestamps to the sender's clock as a browser's A/V sync does, and
// cross-correlates the mouth's opening (the mouth region's change from
// the idle frames) with the audio's energy (decoded Opus). It asserts the
// lag is within ±40 ms and that after POST /interrupt lips and sound stop
// within 40 ms of each other. It needs `make build`, libvpx-dev and
// libopus-dev.
package avsync
