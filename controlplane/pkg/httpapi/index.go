package httpapi

import (
	"embed"
	"net/http"
	"path"
)

// demoFiles is the demo page: plain HTML, JS and CSS, no build step and
// nothing loaded from elsewhere.
//
//go:embed demo/index.html demo/demo.js demo/demo.css demo/avatarfleet.js demo/catalog.js
var demoFiles embed.FS

// demoCSP keeps the page to its own scripts and styles. connect-src allows
// any http(s) origin because a session's whep_url is rooted at the control
// plane's public URL, which may differ from the address the page came from;
// only the viewer token goes there, never the API key.
const demoCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"media-src 'self' blob: mediastream:; connect-src 'self' http: https:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var demoTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// index serves the demo page at /.
func (a *API) index(w http.ResponseWriter, _ *http.Request) {
	serveDemoFile(w, "index.html")
}

// demoAsset serves the demo page's scripts and style sheet under /demo/.
func (a *API) demoAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name != "demo.js" && name != "demo.css" && name != "catalog.js" && name != clientScript {
		http.NotFound(w, r)
		return
	}
	serveDemoFile(w, name)
}

// clientScript is the browser client (an ES module), served at
// /avatarfleet.js for pages of this origin and at /demo/avatarfleet.js for
// the demo page's relative import.
const clientScript = "avatarfleet.js"

// client serves the browser client at /avatarfleet.js.
func (a *API) client(w http.ResponseWriter, _ *http.Request) {
	serveDemoFile(w, clientScript)
}

func serveDemoFile(w http.ResponseWriter, name string) {
	b, err := demoFiles.ReadFile("demo/" + name)
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", demoTypes[path.Ext(name)])
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if path.Ext(name) == ".html" {
		h.Set("Content-Security-Policy", demoCSP)
		h.Set("X-Frame-Options", "DENY")
	}
	_, _ = w.Write(b)
}
