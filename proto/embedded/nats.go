package embedded

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configures an embedded NATS server.
type NATSOptions struct {
	// Addr is host:port to listen on; "" picks a free loopback port.
	Addr string
	// StoreDir holds JetStream data; "" keeps it in a temporary directory.
	StoreDir string
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
	srv     *server.Server
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
	if opts.TLS != nil {
		sopts.TLSConfig = opts.TLS.Clone()
		sopts.TLSTimeout = 5
	}
	if opts.Auth != nil {
		sopts.CustomClientAuthentication = natsAuthenticator{auth: *opts.Auth}
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		_ = os.RemoveAll(tempDir)
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(opts.StartTimeout) {
		srv.Shutdown()
		_ = os.RemoveAll(tempDir)
		return nil, fmt.Errorf("embedded nats on %s:%d: not ready after %s", host, port, opts.StartTimeout)
	}
	return &NATSServer{srv: srv, tempDir: tempDir}, nil
}

// URL is the client URL of the server.
func (s *NATSServer) URL() string { return s.srv.ClientURL() }

// Close shuts the server down and waits for it.
func (s *NATSServer) Close() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
}
