package agent

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsReadHeaderTimeout bounds a scrape's request headers.
const metricsReadHeaderTimeout = 10 * time.Second

// metricsServer serves /metrics: the Go and process collectors, the
// session runtime's figures when it is a prometheus.Collector (the media
// runtime is), and Options.Collectors (the embedded SFU's).
type metricsServer struct {
	lis net.Listener
	srv *http.Server
}

// newMetricsServer binds addr; nil, nil when addr is empty (disabled).
func newMetricsServer(addr string, rt any, extra []prometheus.Collector) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	if c, ok := rt.(prometheus.Collector); ok {
		cs = append(cs, c)
	}
	for _, c := range append(cs, extra...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("agent: metrics collector: %w", err)
		}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: listen for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return &metricsServer{lis: lis, srv: &http.Server{Handler: mux, ReadHeaderTimeout: metricsReadHeaderTimeout}}, nil
}

// serve runs until close.
func (m *metricsServer) serve() error {
	if err := m.srv.Serve(m.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics on %s: %w", m.lis.Addr(), err)
	}
	return nil
}

// close stops the server (and its listener, even if serve never ran).
func (m *metricsServer) close() error {
	err := m.srv.Close()
	if cerr := m.lis.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = errors.Join(err, cerr)
	}
	return err
}
