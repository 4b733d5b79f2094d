package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/workerclient"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// previewWorker is a WorkerService that answers AvatarPreview with a fixed
// response or error, served over real gRPC on loopback.
type previewWorker struct {
	fleetv1.UnimplementedWorkerServiceServer
	resp  *fleetv1.AvatarPreviewResponse
	err   error
	calls atomic.Int32
}

func (p *previewWorker) AvatarPreview(_ context.Context, req *fleetv1.AvatarPreviewRequest) (*fleetv1.AvatarPreviewResponse, error) {
	p.calls.Add(1)
	if p.err != nil {
		return nil, p.err
	}
	return p.resp, nil
}

// serve starts p on loopback and returns its address.
func (p *previewWorker) serve(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fleetv1.RegisterWorkerServiceServer(srv, p)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

func testJPEG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 32, 24))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkLeaks checks, after the test's other cleanups (servers stopped),
// that it left no goroutine behind.
func checkLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func at(v registry.WorkerView, addr string) registry.WorkerView {
	v.Worker.GrpcAddress = addr
	return v
}

func TestAvatarPreview(t *testing.T) {
	checkLeaks(t)
	img := testJPEG(t)
	good := &previewWorker{resp: &fleetv1.AvatarPreviewResponse{Image: img, ContentType: "image/jpeg", Width: 32, Height: 24}}
	missing := &previewWorker{err: status.Error(codes.NotFound, "no such avatar")}
	notImage := &previewWorker{resp: &fleetv1.AvatarPreviewResponse{Image: []byte("<script>alert(1)</script>"), ContentType: "image/jpeg"}}
	huge := &previewWorker{resp: &fleetv1.AvatarPreviewResponse{Image: append(append([]byte{}, img...), make([]byte, maxPreviewBytes)...), ContentType: "image/jpeg"}}
	html := &previewWorker{resp: &fleetv1.AvatarPreviewResponse{Image: img, ContentType: "text/html"}}
	goodAddr, missingAddr := good.serve(t), missing.serve(t)
	notImageAddr, hugeAddr, htmlAddr := notImage.serve(t), huge.serve(t), html.serve(t)
	dead := closedAddr(t)

	one := func(id, addr string, avatars ...string) registry.WorkerView {
		return at(view(id, []int{2}, nil, avatars, nil, ""), addr)
	}
	tests := []struct {
		name   string
		fleet  fakeFleet
		path   string
		inm    string // If-None-Match
		status int
		code   string
	}{
		{"served", fakeFleet{one("w1", goodAddr, "bob")}, "/v1/avatars/bob/preview", "", http.StatusOK, ""},
		{"unknown avatar", fakeFleet{one("w1", goodAddr, "bob")}, "/v1/avatars/alice/preview", "", http.StatusNotFound, apiv1.CodeNotFound},
		{"malformed name", fakeFleet{one("w1", goodAddr, "bob")}, "/v1/avatars/.bob/preview", "", http.StatusNotFound, apiv1.CodeNotFound},
		{"escaped slash", fakeFleet{one("w1", goodAddr, "bob")}, "/v1/avatars/..%2Fbob/preview", "", http.StatusNotFound, apiv1.CodeNotFound},
		{"only on a draining worker", fakeFleet{drained(one("w1", goodAddr, "bob"))}, "/v1/avatars/bob/preview", "", http.StatusNotFound, apiv1.CodeNotFound},
		{"worker has no preview", fakeFleet{one("w1", missingAddr, "bob")}, "/v1/avatars/bob/preview", "", http.StatusNotFound, apiv1.CodeNotFound},
		{"dead worker, next one answers", fakeFleet{
			at(view("w1", []int{4}, nil, []string{"bob"}, nil, ""), dead), one("w2", goodAddr, "bob"),
		}, "/v1/avatars/bob/preview", "", http.StatusOK, ""},
		{"every worker dead", fakeFleet{one("w1", dead, "bob")}, "/v1/avatars/bob/preview", "", http.StatusServiceUnavailable, apiv1.CodeUnavailable},
		{"worker sends no image", fakeFleet{one("w1", notImageAddr, "bob")}, "/v1/avatars/bob/preview", "", http.StatusServiceUnavailable, apiv1.CodeUnavailable},
		{"worker sends too much", fakeFleet{one("w1", hugeAddr, "bob")}, "/v1/avatars/bob/preview", "", http.StatusServiceUnavailable, apiv1.CodeUnavailable},
		{"worker sends another type", fakeFleet{one("w1", htmlAddr, "bob")}, "/v1/avatars/bob/preview", "", http.StatusServiceUnavailable, apiv1.CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := workerclient.NewPool()
			defer pool.Close()
			a := catalogAPI(t, tt.fleet, pool)
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, tt.path, nil)
			r.Header.Set("Authorization", "Bearer "+testSessionsKey)
			a.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.code != "" {
				var eb apiv1.ErrorBody
				if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Code != tt.code {
					t.Fatalf("error body %s (%v), want code %s", w.Body, err, tt.code)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "image/jpeg" {
				t.Fatalf("Content-Type %q", ct)
			}
			got, err := jpeg.Decode(w.Body)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got.Bounds().Dx() != 32 || got.Bounds().Dy() != 24 {
				t.Fatalf("image %v", got.Bounds())
			}
			if w.Header().Get("ETag") == "" || w.Header().Get("Cache-Control") != "private, max-age=300" {
				t.Fatalf("cache headers %v", w.Header())
			}
		})
	}
}

// TestAvatarPreviewETag: the ETag is the image's, stable across requests;
// If-None-Match with it (or "*", or among others) is 304 without a body;
// another tag gets the image.
func TestAvatarPreviewETag(t *testing.T) {
	checkLeaks(t)
	good := &previewWorker{resp: &fleetv1.AvatarPreviewResponse{Image: testJPEG(t), ContentType: "image/jpeg"}}
	addr := good.serve(t)
	pool := workerclient.NewPool()
	defer pool.Close()
	a := catalogAPI(t, fakeFleet{at(view("w1", []int{1}, nil, []string{"bob"}, nil, ""), addr)}, pool)
	get := func(inm string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/v1/avatars/bob/preview", nil)
		r.Header.Set("Authorization", "Bearer "+testSessionsKey)
		if inm != "" {
			r.Header.Set("If-None-Match", inm)
		}
		a.ServeHTTP(w, r)
		return w
	}
	first := get("")
	etag := first.Header().Get("ETag")
	if first.Code != http.StatusOK || len(etag) < 10 {
		t.Fatalf("first: %d, ETag %q", first.Code, etag)
	}
	tests := []struct {
		inm    string
		status int
	}{
		{etag, http.StatusNotModified},
		{"W/" + etag, http.StatusNotModified},
		{`"other", ` + etag, http.StatusNotModified},
		{"*", http.StatusNotModified},
		{`"other"`, http.StatusOK},
		{"", http.StatusOK},
	}
	for _, tt := range tests {
		w := get(tt.inm)
		if w.Code != tt.status {
			t.Errorf("If-None-Match %q: status %d, want %d", tt.inm, w.Code, tt.status)
		}
		if w.Header().Get("ETag") != etag {
			t.Errorf("If-None-Match %q: ETag %q, want %q", tt.inm, w.Header().Get("ETag"), etag)
		}
		if tt.status == http.StatusNotModified && w.Body.Len() != 0 {
			t.Errorf("304 with a body of %d bytes", w.Body.Len())
		}
	}
	if n := good.calls.Load(); n != int32(len(tests)+1) {
		t.Errorf("worker asked %d times, want %d (no cache in the control plane)", n, len(tests)+1)
	}
}
