// Package markrecovery holds the end-to-end test of a create's ready mark
// surviving its replica's crash: a create answers 201 before its ready mark
// is written (group-committed after, off the request); when the replica
// dies in between, another replica's reaper asks the worker and writes the
// mark itself. It has no code of its own.
package markrecovery
