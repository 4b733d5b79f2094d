// Package observability checks the project's Grafana dashboard
// (deploy/helm/avatarfleet/dashboards/avatarfleet.json) against the metrics
// the binaries really expose: it validates the dashboard's shape (panels
// with targets, unique ids, a Prometheus datasource variable), parses every
// target expression with Prometheus's own PromQL parser, and finds each
// metric, label matcher and grouping label in the metric families scraped
// from /metrics of a running control plane and worker (parsed with
// prometheus/common's expfmt). Its tests start the real binaries
// (e2e/internal/binfleet).
package observability
