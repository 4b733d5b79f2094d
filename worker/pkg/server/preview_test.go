package server

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime/runtimetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/slotwatch"
)

// previewClient serves a worker with previews over loopback gRPC.
func previewClient(t *testing.T, previews Previews) fleetv1.WorkerServiceClient {
	t.Helper()
	store := servers.Store(t)
	worker := servers.Name(t, "w")
	rt := runtimetest.NewHolder([]*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: 1, Cpu: true}}, nil)
	t.Cleanup(func() { _ = rt.Close(t.Context()) })
	srv, err := New(Config{WorkerID: worker, Runtime: rt, Slots: slotwatch.New(store, worker, nil, nil), Previews: previews})
	if err != nil {
		t.Fatal(err)
	}
	g := NewGRPC(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return fleetv1.NewWorkerServiceClient(conn)
}

func TestAvatarPreview(t *testing.T) {
	jpegBytes := []byte("\xff\xd8\xff\xe0 pretend")
	previews := func(name string) (Preview, bool) {
		switch name {
		case "bob":
			return Preview{Image: jpegBytes, ContentType: "image/jpeg", Width: 4, Height: 3}, true
		case "empty":
			return Preview{ContentType: "image/jpeg"}, true
		case "huge":
			return Preview{Image: make([]byte, MaxPreviewBytes+1), ContentType: "image/jpeg"}, true
		}
		return Preview{}, false
	}
	cl := previewClient(t, previews)
	none := previewClient(t, nil)
	tests := []struct {
		name   string
		client fleetv1.WorkerServiceClient
		avatar string
		code   codes.Code
	}{
		{"served", cl, "bob", codes.OK},
		{"unknown", cl, "alice", codes.NotFound},
		{"no previews configured", none, "bob", codes.NotFound},
		{"path trick", cl, "../bob", codes.InvalidArgument},
		{"empty name", cl, "", codes.InvalidArgument},
		{"empty image is a worker bug", cl, "empty", codes.Internal},
		{"oversize image is a worker bug", cl, "huge", codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.client.AvatarPreview(t.Context(), &fleetv1.AvatarPreviewRequest{Avatar: tt.avatar})
			if tt.code != codes.OK {
				wantCode(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.GetImage()) != string(jpegBytes) || resp.GetContentType() != "image/jpeg" || resp.GetWidth() != 4 || resp.GetHeight() != 3 {
				t.Fatalf("response %v", resp)
			}
		})
	}
}
