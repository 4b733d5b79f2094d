// Package sfu is the selective forwarding unit embedded in each worker: it
// takes a session's encoded media once and fans it out to every WHEP viewer
// of that session, and decodes WHIP publishers' microphone audio for the
// session's pipeline. It is built on Pion WebRTC.
//
// # Rooms
//
// One Room per session. The session writes each VP8 frame and Opus packet
// once (Room.WriteVideo, Room.WriteAudio). A room has one
// webrtc.TrackLocalStaticSample per kind shared by all its viewers'
// PeerConnections: a sample is packetised once, and Pion writes each packet
// to each viewer's binding in turn — the viewer's interceptors, SRTP, one
// UDP send — with no per-viewer goroutine or queue. Sends are UDP datagrams
// on a non-blocking socket, so a viewer that stops reading or vanishes costs
// its own packets only and never slows the writer or the other viewers.
//
// # Network
//
// Every peer of every room shares one UDP socket (Config.MediaPort), through
// Pion's ICE UDP mux; the SFU offers host candidates on it only (with
// Config.PublicIP in place of the local address behind 1:1 NAT), optionally
// as an ICE-lite agent. Config.ICEServers are for clients (TURN for viewers
// whose networks block UDP to the worker); the SFU does not use them.
//
// # RTCP
//
// Each viewer's PeerConnection has its own interceptor chain, built from a
// registry holding only what a send-only peer needs, all three the SFU's
// own: the NACK responder, sender reports (A/V sync in the browser, and the
// echo the viewer's receiver reports carry for the RTT), and the interceptor
// that counts what the viewer gets and holds its video back until the first
// keyframe. The NACK responder answers from the room's one cache of the
// last 1024 video packets (the viewers' packets differ only in SSRC and
// payload type, rewritten on a resend), not a copy per viewer as Pion's
// does; the sender reports read the clock once per frame, not per packet. No TWCC, REMB or NACK generator:
// there is one encoding for all, so nothing would act on them. PLI and FIR
// read from each viewer's RTPSender become keyframe requests to the encoder
// (RoomOptions.OnKeyframeRequest), limited per room to one per
// Config.KeyframeInterval (the first at once, one held request at the end of
// the interval), so one viewer cannot cause a keyframe storm; a viewer whose
// video binding comes up also asks for one.
//
// # Lifecycle
//
// Offers are checked with pion/sdp before Pion's PeerConnection sees them
// (ErrInvalidSDP says what is wrong). Answers are complete (non-trickle).
// A viewer or publisher whose ICE fails, who closes, or who never connects
// within Config.ConnectTimeout is removed, and OnViewersChanged reports the
// new count. Every goroutine belongs to its room and ends with it.
//
// # Observability
//
// Room.Stats returns the room's and each viewer's counters; SFU implements
// prometheus.Collector over the same figures.
package sfu
