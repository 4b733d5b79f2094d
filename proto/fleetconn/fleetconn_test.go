package fleetconn

import (
	"testing"
	"time"
)

// The client notices a silent etcd member within seconds and redials a
// member that comes back within a second: fleetstore's retries rely on it.
func TestEtcdClientConfigDetectsDeadMembers(t *testing.T) {
	cfg, err := EtcdConfig{Endpoints: []string{"http://127.0.0.1:2379", "http://127.0.0.1:2380"}}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DialTimeout != DefaultDialTimeout {
		t.Errorf("DialTimeout = %s, want %s", cfg.DialTimeout, DefaultDialTimeout)
	}
	if cfg.DialKeepAliveTime+cfg.DialKeepAliveTimeout > 5*time.Second || cfg.DialKeepAliveTime == 0 {
		t.Errorf("keepalive %s + %s: a dead member is noticed too late", cfg.DialKeepAliveTime, cfg.DialKeepAliveTimeout)
	}
	if !cfg.PermitWithoutStream {
		t.Error("keepalive pings only with open streams: an idle connection to a dead member goes unnoticed")
	}
	if len(cfg.DialOptions) == 0 {
		t.Error("no dial options: gRPC's reconnect backoff grows to two minutes")
	}
}

func TestEtcdConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  EtcdConfig
		ok   bool
	}{
		{"plain", EtcdConfig{Endpoints: []string{"http://127.0.0.1:2379"}}, true},
		{"no endpoints", EtcdConfig{}, false},
		{"bad scheme", EtcdConfig{Endpoints: []string{"tcp://127.0.0.1:2379"}}, false},
		{"https without TLS", EtcdConfig{Endpoints: []string{"https://127.0.0.1:2379"}}, false},
		{"password without user", EtcdConfig{Endpoints: []string{"http://127.0.0.1:2379"}, Password: "x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
