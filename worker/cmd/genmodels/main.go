// Command genmodels writes the project's generated ONNX models (package
// onnxgen) into a directory:
//
//	go run ./worker/cmd/genmodels -out .cache/models
//
// writes default.onnx (the default lip-sync model, S = 96, a few hundred
// kilobytes) and benchmark.onnx (Wav2Lip's layer shapes with pseudo-random
// weights, about 145 MB). Output is byte-stable: a file whose content is
// already right is left alone.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

func main() {
	out := flag.String("out", "", "directory to write the models into (created if missing)")
	size := flag.Int("size", onnxgen.DefaultSize, "face crop size S of the default model")
	only := flag.String("only", "", `write one model only: "default" or "benchmark"`)
	flag.Parse()
	if err := run(*out, *size, *only); err != nil {
		fmt.Fprintln(os.Stderr, "genmodels:", err)
		os.Exit(1)
	}
}

func run(dir string, size int, only string) error {
	if dir == "" {
		return errors.New("-out is required")
	}
	models := []struct {
		name string
		gen  func() ([]byte, error)
	}{
		{"default", func() ([]byte, error) { return onnxgen.DefaultModelOfSize(size) }},
		{"benchmark", onnxgen.BenchmarkModel},
	}
	if only != "" && only != "default" && only != "benchmark" {
		return fmt.Errorf("-only %q: want default or benchmark", only)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, m := range models {
		if only != "" && only != m.name {
			continue
		}
		data, err := m.gen()
		if err != nil {
			return fmt.Errorf("generating %s model: %w", m.name, err)
		}
		path := filepath.Join(dir, m.name+".onnx")
		written, err := writeIfChanged(path, data)
		if err != nil {
			return err
		}
		state := "up to date"
		if written {
			state = "written"
		}
		fmt.Printf("%s: %d bytes, %s\n", path, len(data), state)
	}
	return nil
}

// writeIfChanged replaces path with data (through a temporary file and a
// rename, so readers never see half a model) unless it already holds it.
func writeIfChanged(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, err
	}
	return true, nil
}
