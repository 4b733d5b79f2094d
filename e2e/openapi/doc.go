// Package openapi checks the control plane's OpenAPI spec (served at GET
// /openapi.json) against the real thing: its tests drive a running fleet
// (embedded etcd and NATS, a control-plane replica, a worker with a real
// Pion SFU stand-in) through every route and validate each request and each
// response with libopenapi-validator, and each server-sent event's data
// with the spec's schema. Only the GPUs are stand-ins.
package openapi
