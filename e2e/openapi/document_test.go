package openapi_test

import (
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/httpapi"
)

// TestOpenAPIDocumentValid: controlplane/pkg/httpapi/openapi.json is an OpenAPI 3.1 document the
// library builds a model of and validates against the 3.1 meta-schema. (It lives here, not beside the spec, so that
// the httpapi package and its fuzz targets do not link the library.)
func TestOpenAPIDocumentValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(httpapi.OpenAPISpec())
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi %q, want 3.1.x", v)
	}
	if _, err := doc.BuildV3Model(); err != nil {
		t.Fatalf("build model: %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  %s (%s): %s", se.FieldPath, se.KeywordLocation, se.Reason)
			}
		}
	}
}
