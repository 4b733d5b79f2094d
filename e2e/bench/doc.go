// Package bench holds the control plane's benchmarks (`make bench`): raw
// etcd transaction throughput next to REST placement throughput and
// latency, measured in one run on one machine.
package bench
