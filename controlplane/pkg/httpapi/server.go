// Package httpapi is the control plane's public HTTP surface: the REST API
// (/v1), server-sent events, health and readiness probes, /metrics, and the
// API's OpenAPI 3.1 description (/openapi.json, openapi.json here). It
// validates every input, authenticates with API keys, and turns the session
// manager's outcomes into the documented status codes; it holds no state.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Options configures the HTTP API.
type Options struct {
	Sessions *sessions.Manager
	Registry *registry.Registry
	Store    *fleetstore.Store
	// Fleet is what the catalogue (GET /v1/avatars, /v1/voices) reads;
	// nil means Registry.
	Fleet FleetView
	// WorkerClients dials workers for avatar previews; nil answers those
	// 503.
	WorkerClients WorkerClients
	Keys          *auth.Keys
	Tokens        *viewertoken.Signer
	// Events is the JetStream the lifecycle events stream lives in.
	Events jetstream.JetStream
	// Ready reports whether this replica can serve (etcd, NATS, cache).
	Ready func(ctx context.Context) error
	// Gatherer serves /metrics; Registerer takes the API's own metrics.
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer
	// PublicURL roots the URLs the API hands out (WHEP); empty means the
	// scheme and host of each request.
	PublicURL string
	Log       *slog.Logger
	// RequestTimeout bounds each non-streaming request.
	RequestTimeout time.Duration
	// StatsTimeout bounds the call to a worker for a session's media
	// figures on GET /v1/sessions/{id} (default 500ms; on failure the
	// figures are left out, the GET still succeeds).
	StatsTimeout time.Duration
	// BodyTimeout and BodyMinRate bound how long a request body may take
	// to arrive: BodyTimeout plus one second per BodyMinRate bytes read
	// (defaults 10s and 128 KiB/s; a 50 MiB upload gets about 410 s). A
	// body that misses it is answered 408 request_timeout.
	BodyTimeout time.Duration
	BodyMinRate int64
	// StreamsDone, when closed, ends long-lived streams (events), which
	// an HTTP server's graceful shutdown would otherwise wait for.
	StreamsDone <-chan struct{}
}

// API serves the control plane's HTTP routes.
type API struct {
	opts     Options
	log      *slog.Logger
	mux      *http.ServeMux
	requests *prometheus.HistogramVec
	// signaling counts WHEP/WHIP requests by result.
	signaling *signalingMetrics
	// limits are this replica's per-key rate buckets and stream counts.
	limits *keyLimiter
	// patterns is the route table: every pattern registered on mux, in
	// registration order (Routes; the OpenAPI test walks it).
	patterns []string
}

// New builds the API handler.
func New(opts Options) *API {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.StatsTimeout == 0 {
		opts.StatsTimeout = 500 * time.Millisecond
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = defaultBodyTimeout
	}
	if opts.BodyMinRate <= 0 {
		opts.BodyMinRate = defaultBodyMinRate
	}
	a := &API{opts: opts, log: opts.Log, mux: http.NewServeMux(), limits: newKeyLimiter()}
	a.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "avatarfleet_http_request_duration_seconds",
		Help:    "HTTP requests by route and status code.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"route", "code"})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(a.requests)
	}
	a.signaling = newSignalingMetrics(opts.Registerer)
	a.routes()
	return a
}

func (a *API) routes() {
	sess, admin := auth.ScopeSessions, auth.ScopeAdmin
	a.handle("POST /v1/sessions", sess, a.createSession)
	a.handle("GET /v1/sessions", sess, a.listSessions)
	a.handle("GET /v1/sessions/{id}", sess, a.getSession)
	a.handle("DELETE /v1/sessions/{id}", sess, a.deleteSession)
	a.handle("POST /v1/sessions/{id}/speak", sess, a.speak)
	a.handleBody("POST /v1/sessions/{id}/audio", sess, maxAudioBody, a.pushAudio)
	a.handle("POST /v1/sessions/{id}/interrupt", sess, a.interrupt)
	a.handle("POST /v1/sessions/{id}/tokens", sess, a.createToken)
	a.handle("GET /v1/avatars", sess, a.listAvatars)
	a.handle("GET /v1/avatars/{name}/preview", sess, a.avatarPreview)
	a.handle("GET /v1/voices", sess, a.listVoices)
	a.handle("GET /v1/workers", admin, a.listWorkers)
	a.handle("GET /v1/workers/{id}", admin, a.getWorker)
	a.handle("POST /v1/workers/{id}/drain", admin, a.drainWorker)
	a.handle("POST /v1/workers/{id}/undrain", admin, a.undrainWorker)
	a.signalingRoutes()
	a.recordingRoutes()
	a.register("GET /v1/events", a.instrument("GET /v1/events", a.authenticated(sess, a.events)))
	a.register("GET /v1/sessions/{id}/events", a.instrument("GET /v1/sessions/{id}/events", a.sessionEventsHandler()))

	a.register("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	a.register("GET /readyz", http.HandlerFunc(a.readyz))
	if a.opts.Gatherer != nil {
		a.register("GET /metrics", promhttp.HandlerFor(a.opts.Gatherer, promhttp.HandlerOpts{}))
	}
	a.register("GET /openapi.json", http.HandlerFunc(serveOpenAPI))
	a.register("GET /{$}", http.HandlerFunc(a.index))
	a.register("GET /demo/{file}", http.HandlerFunc(a.demoAsset))
	a.register("GET /"+clientScript, http.HandlerFunc(a.client))
}

// register adds a route to the mux and to the route table.
func (a *API) register(pattern string, h http.Handler) {
	a.mux.Handle(pattern, h)
	a.patterns = append(a.patterns, pattern)
}

// Routes is the route table: every "METHOD /path" pattern the API serves,
// in registration order. The OpenAPI spec (/openapi.json) documents each.
func (a *API) Routes() []string {
	return append([]string(nil), a.patterns...)
}

// handlerFunc is a route handler that returns its error instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p auth.Principal) error

func (a *API) handle(pattern, scope string, h handlerFunc) {
	a.handleBody(pattern, scope, 0, h)
}

// handleBody is handle for a route whose body may be large: its time
// limit grows by what the body deadline allows for maxBody bytes, so an
// upload that keeps to the minimum rate is not cut by the request timeout.
func (a *API) handleBody(pattern, scope string, maxBody int64, h handlerFunc) {
	timeout := a.opts.RequestTimeout
	if maxBody > 0 {
		timeout += a.opts.BodyTimeout + time.Duration(maxBody/a.opts.BodyMinRate)*time.Second
	}
	a.register(pattern, a.instrument(pattern, a.withTimeout(timeout, a.authenticated(scope, h))))
}

func (a *API) withTimeout(timeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (a *API) authenticated(scope string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := auth.BearerToken(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="avatarfleet"`)
			writeError(w, errorf(http.StatusUnauthorized, apiv1.CodeUnauthorized, "missing bearer API key"))
			return
		}
		p, err := a.opts.Keys.Authenticate(token)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="avatarfleet", error="invalid_token"`)
			writeError(w, errorf(http.StatusUnauthorized, apiv1.CodeUnauthorized, "invalid API key"))
			return
		}
		if !p.Has(scope) {
			writeError(w, errorf(http.StatusForbidden, apiv1.CodeForbidden, "API key lacks scope %q", scope))
			return
		}
		if err := a.limits.allow(p, time.Now()); err != nil {
			writeError(w, err)
			return
		}
		if err := h(w, r, p); err != nil {
			a.fail(w, r, err)
		}
	})
}

// fail writes an error; unexpected ones are logged at ERROR (never with the
// key). Refusals the API expects under load (503 no_capacity, unavailable)
// are not faults of this replica: they are logged at DEBUG and INFO.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	err = mapError(err)
	ae, ok := err.(*apiError)
	switch {
	case !ok:
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	case ae.code == apiv1.CodeNoCapacity:
		a.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "err", err)
	case ae.status >= 500:
		a.log.Info("request refused", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, err)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush lets server-sent events through the wrapper.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (a *API) instrument(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				// A bug, not bad input: keep the process, answer 500, log it.
				a.log.Error("handler panic", "route", route, "panic", v)
				if sw.status == 0 {
					writeError(sw, errorf(http.StatusInternalServerError, apiv1.CodeInternal, "internal error"))
				}
			}
			a.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
	})
}

// ServeHTTP routes a request; unmatched paths and methods get the JSON
// error envelope instead of the mux's plain text.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern == "" {
		probe := &statusWriter{ResponseWriter: discardWriter{h: w.Header()}}
		a.mux.ServeHTTP(probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			writeError(w, errorf(http.StatusMethodNotAllowed, apiv1.CodeMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path))
			return
		}
		writeError(w, errorf(http.StatusNotFound, apiv1.CodeNotFound, "no route %s %s", r.Method, r.URL.Path))
		return
	}
	a.mux.ServeHTTP(w, a.withBodyDeadline(w, r))
}

// discardWriter lets the mux write its default 404/405 (and the Allow
// header, kept) without sending the plain-text body.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d discardWriter) WriteHeader(int)             {}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.opts.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.opts.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// baseURL is the public root of URLs the API hands out.
func (a *API) baseURL(r *http.Request) string {
	if a.opts.PublicURL != "" {
		return a.opts.PublicURL
	}
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
