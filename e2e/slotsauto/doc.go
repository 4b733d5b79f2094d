// Package slotsauto holds the end-to-end test of --slots-per-gpu auto: a
// real bin/worker measures its lip-sync model at start, registers the
// measured slot count with its measurement, and placement through a real
// bin/controlplane fills exactly that many slots. It has no code of its
// own.
package slotsauto
