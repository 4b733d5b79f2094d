// Package catalog tests what the fleet says it serves, end to end: GET
// /v1/avatars, GET /v1/voices and the avatar previews, against a fleet of
// real parts (embedded etcd and NATS with credentials, a control-plane
// replica, worker agents over mutual-TLS gRPC) whose workers advertise
// different avatar packs (loaded from disk by the worker's avatar package)
// and voices (TestCatalogAggregatesWorkers), and against bin/controlplane
// with two bin/worker processes, each with its own --avatars directory
// (TestCatalogWithWorkerBinaries: `make build` first). Only the GPUs are
// stand-ins.
package catalog
