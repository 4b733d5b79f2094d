// Package inferencetest loads generated models into the ONNX Runtime that
// scripts/setup.sh installs, for the tests and benchmarks of the packages
// that run them (the inference package's own tests have their own: they
// cannot import this package).
package inferencetest

import (
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// Load opens an ONNX Runtime with opts and loads the model gen makes,
// under name; the runtime is closed when tb ends.
func Load(tb testing.TB, name string, gen func() ([]byte, error), opts inference.RuntimeOptions) *inference.Model {
	tb.Helper()
	rt, err := inference.NewRuntime(opts)
	if err != nil {
		tb.Fatalf("NewRuntime: %v (run scripts/setup.sh first)", err)
	}
	tb.Cleanup(func() {
		if err := rt.Close(); err != nil {
			tb.Errorf("Runtime.Close: %v", err)
		}
	})
	data, err := gen()
	if err != nil {
		tb.Fatal(err)
	}
	m, err := rt.LoadModelData(name, data)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// Default loads onnxgen's default lip-sync model.
func Default(tb testing.TB) *inference.Model {
	tb.Helper()
	return Load(tb, "default", onnxgen.DefaultModel, inference.RuntimeOptions{})
}
