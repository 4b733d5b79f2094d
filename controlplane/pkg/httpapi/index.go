package httpapi

import (
	_ "embed"
	"net/http"
)

//go:embed index.html
var indexHTML []byte

// index serves the landing page: what this server is and where its API is.
func (a *API) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(indexHTML)
}
