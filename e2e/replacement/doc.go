// Package replacement holds the end-to-end tests of re-placement: sessions
// of a lost worker moving to another one in an in-process fleet (real etcd,
// NATS, gRPC and Pion peers). It has no code of its own.
package replacement
