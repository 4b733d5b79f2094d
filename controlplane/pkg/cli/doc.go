// Package cli is avatarctl, the admin command line of AvatarFleet: a cobra
// command tree over package apiclient, plus "certs", which makes the fleet
// CA and certificates offline (package fleetpki), and "workers scale",
// which scales the worker StatefulSet through package kubescale.
//
// NewRootCommand builds the tree with no package state: it writes only to
// the writers of Options, reads the environment only through
// Options.Getenv, never reads os.Args (set arguments with SetArgs) and
// honours the context given to ExecuteContext. Run wraps it for main and
// for tests: it executes one command line and returns the exit code.
package cli
