// Package avdrift holds the A/V drift benchmark of the media pipeline
// (README, "Latency contract"): one speaking session on the real clock for
// -drift.duration (20 s by default, 1 h for the README's figure), measuring
// how far the audio and the video a transport receives drift apart, in
// their timestamps and in their arrival. It is a package of its own so
// that its flag can be passed (make bench) without reaching the other
// packages' test binaries.
package avdrift
