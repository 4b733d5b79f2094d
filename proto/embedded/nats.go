package embedded

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configures an embedded NATS server.
type NATSOptions struct {
	// Addr is host:port to listen on; "" picks a free loopback port.
	Addr string
	// StoreDir holds JetStream data; "" keeps it in a temporary directory.
	StoreDir string
	// MaxStore bounds JetStream's file store, in bytes; 0 keeps NATS'
	// default, 75% of StoreDir's free disk when the server starts.
	MaxStore int64
	// StartTimeout bounds the wait for the server to accept clients.
	StartTimeout time.Duration
	// TLS, when set, makes clients speak TLS: its certificates are the
	// server's; its ClientCAs and ClientAuth (tls.VerifyClientCertIfGiven
	// or tls.RequireAndVerifyClientCert) verify client certificates, which
	// NATSAuth.MapCertificates maps to fleet roles.
	TLS *tls.Config
	// Auth, when set, refuses anonymous clients and binds each client to
	// its role's permissions; nil leaves the server open (tests that do
	// not test security).
	Auth *NATSAuth
}

// NATSServer is a running embedded NATS server with JetStream.
type NATSServer struct {
	mu      sync.Mutex
	srv     *server.Server
	opts    server.Options // to start it again (Restart)
	timeout time.Duration
	tempDir string // removed on Close when the store was temporary
}

// StartNATS starts an embedded NATS server with JetStream enabled.
func StartNATS(opts NATSOptions) (*NATSServer, error) {
	host, port := "127.0.0.1", -1 // -1: a random free port
	if opts.Addr != "" {
		h, p, err := net.SplitHostPort(opts.Addr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen address %q: %w", opts.Addr, err)
		}
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("embedded nats listen port %q: %w", p, err)
		}
		if h != "" {
			host = h
		}
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	var tempDir string
	if opts.StoreDir == "" {
		dir, err := os.MkdirTemp("", "avatarfleet-nats-")
		if err != nil {
			return nil, fmt.Errorf("embedded nats store: %w", err)
		}
		tempDir, opts.StoreDir = dir, dir
	}
	sopts := &server.Options{
		ServerName: "avatarfleet-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	if opts.MaxStore < 0 {
		_ = os.RemoveAll(tempDir)
		return nil, fmt.Errorf("embedded nats: JetStream store limit %d must not be negative", opts.MaxStore)
	}
	sopts.JetStreamMaxStore = opts.MaxStore
	if opts.TLS != nil {
		sopts.TLSConfig = opts.TLS.Clone()
		sopts.TLSTimeout = 5
	}
	if opts.Auth != nil {
		sopts.CustomClientAuthentication = natsAuthenticator{auth: *opts.Auth}
	}
	srv, err := startNATS(*sopts, opts.StartTimeout)
	if err != nil {
		_ = os.RemoveAll(tempDir)
		return nil, err
	}
	// A restart listens on the port this start got.
	if addr, ok := srv.Addr().(*net.TCPAddr); ok {
		sopts.Port = addr.Port
	}
	return &NATSServer{srv: srv, opts: *sopts, timeout: opts.StartTimeout, tempDir: tempDir}, nil
}

func startNATS(opts server.Options, timeout time.Duration) (*server.Server, error) {
	srv, err := server.NewServer(&opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(timeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d: not ready after %s", opts.Host, opts.Port, timeout)
	}
	return srv, nil
}

// URL is the client URL of the server.
func (s *NATSServer) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv.ClientURL()
}

// Stop shuts the server down, keeping its store, as an outage would:
// clients lose their connections until Restart.
func (s *NATSServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// Restart starts a stopped server again on the same address with the same
// store, so clients reconnect and JetStream streams keep their messages.
func (s *NATSServer) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv.Running() {
		return nil
	}
	srv, err := startNATS(s.opts, s.timeout)
	if err != nil {
		return err
	}
	s.srv = srv
	return nil
}

// Close shuts the server down and waits for it.
func (s *NATSServer) Close() {
	s.Stop()
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
}
