package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// Body size limits.
const (
	maxJSONBody  = 1 << 20  // 1 MiB
	maxAudioBody = 50 << 20 // 50 MiB
)

// hasMediaType reports whether the request's Content-Type is one of types.
func hasMediaType(r *http.Request, types ...string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return false
	}
	for _, t := range types {
		if mt == t {
			return true
		}
	}
	return false
}

// decodeJSON reads a strict JSON body into dst: Content-Type
// application/json, at most maxJSONBody bytes, no unknown fields, one value.
// allowEmpty accepts a request without a body as "{}".
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any, allowEmpty bool) error {
	if allowEmpty && r.ContentLength == 0 && r.Header.Get("Content-Type") == "" {
		return nil
	}
	if !hasMediaType(r, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedMediaType, "body must be application/json")
	}
	body := http.MaxBytesReader(w, r.Body, maxJSONBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) && allowEmpty {
			return nil
		}
		return jsonError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonError(err)
		}
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "body must hold a single JSON object")
	}
	return nil
}

func jsonError(err error) error {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, errBodyTimeout):
		return err
	case errors.As(err, &tooLarge):
		return errorf(http.StatusRequestEntityTooLarge, apiv1.CodePayloadTooLarge, "body larger than %d bytes", tooLarge.Limit)
	case errors.As(err, &syntax):
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "field %q: want %s, got %s", typ.Field, typ.Type, typ.Value)
	case errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "empty body")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "truncated JSON")
	}
	// Unknown fields and other decoder complaints.
	return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "%s", fmt.Sprint(err))
}

// readLimited reads a whole non-JSON body of at most limit bytes.
func readLimited(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, errorf(http.StatusRequestEntityTooLarge, apiv1.CodePayloadTooLarge, "body larger than %d bytes", limit)
		}
		if errors.Is(err, errBodyTimeout) {
			return nil, err
		}
		return nil, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "read body: %v", err)
	}
	return b, nil
}
