package httpapi

import (
	_ "embed"
	"net/http"
)

// openAPISpec is the OpenAPI 3.1 description of every route of this
// package (openapi.json beside this file). openapi_test.go holds it to the
// route table, the handlers' status codes and the apiv1 types; the e2e
// suite e2e/openapi validates a running control plane's traffic with it.
//
//go:embed openapi.json
var openAPISpec []byte

// OpenAPISpec returns the OpenAPI 3.1 document served at GET /openapi.json.
func OpenAPISpec() []byte {
	return append([]byte(nil), openAPISpec...)
}

// serveOpenAPI answers GET /openapi.json: the spec, without authentication
// (it describes the API; it holds no secret).
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(openAPISpec)
}
