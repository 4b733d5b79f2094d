package inference

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// Session is a generic ONNX Runtime session for models that are not
// lip-sync models (the face detector, for one): float32 inputs and outputs
// of fixed shapes, named by the caller, with tensors allocated once and
// reused by every Run. Like a Context it holds a reference on the
// process's environment until Close. Run and Close may be called from
// different goroutines; Runs are serialised.
type Session struct {
	name string

	mu     sync.Mutex
	sess   *ort.AdvancedSession
	in     []*ort.Tensor[float32]
	out    []*ort.Tensor[float32]
	closed bool
}

// TensorSpec names one float32 input or output of a Session and fixes its
// shape (every dimension positive).
type TensorSpec struct {
	Name  string
	Shape []int64
}

// SessionOptions configures NewSession; the zero value is one CPU thread.
type SessionOptions struct {
	// IntraOpThreads: as in ContextOptions (0 means 1).
	IntraOpThreads int
	// Device is the CPU (zero value) or a CUDA GPU.
	Device Device
}

// NewSession opens a session of the ONNX model in data (name is for
// errors) bound to tensors of the given specs. The model's own checks
// happen in ONNX Runtime: a name it does not have or a shape it rejects
// makes NewSession or Run fail.
func (r *Runtime) NewSession(name string, data []byte, inputs, outputs []TensorSpec, opts SessionOptions) (*Session, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("inference: session %s: no model data", name)
	}
	if len(inputs) == 0 || len(outputs) == 0 {
		return nil, fmt.Errorf("inference: session %s: needs at least one input and one output", name)
	}
	if opts.IntraOpThreads < 0 || opts.Device.Index < 0 {
		return nil, fmt.Errorf("inference: session %s: negative option %+v", name, opts)
	}
	threads := opts.IntraOpThreads
	if threads == 0 {
		threads = 1
	}
	if err := r.hold(); err != nil {
		return nil, err
	}
	s := &Session{name: name}
	if err := s.open(data, inputs, outputs, threads, opts.Device); err != nil {
		s.free()
		releaseEnv()
		return nil, fmt.Errorf("inference: session %s on %s: %w", name, opts.Device, err)
	}
	return s, nil
}

func (s *Session) open(data []byte, inputs, outputs []TensorSpec, threads int, dev Device) error {
	inNames, inVals, err := s.tensors(inputs, &s.in)
	if err != nil {
		return err
	}
	outNames, outVals, err := s.tensors(outputs, &s.out)
	if err != nil {
		return err
	}
	so, err := sessionOptions(threads, dev)
	if err != nil {
		return err
	}
	defer so.Destroy()
	s.sess, err = ort.NewAdvancedSessionWithONNXData(data, inNames, outNames, inVals, outVals, so)
	if err != nil {
		return fmt.Errorf("creating session: %w", err)
	}
	return nil
}

// tensors allocates one tensor per spec into *dst.
func (s *Session) tensors(specs []TensorSpec, dst *[]*ort.Tensor[float32]) ([]string, []ort.Value, error) {
	names := make([]string, 0, len(specs))
	vals := make([]ort.Value, 0, len(specs))
	for _, spec := range specs {
		if spec.Name == "" || len(spec.Shape) == 0 {
			return nil, nil, fmt.Errorf("tensor spec %+v: want a name and a shape", spec)
		}
		for _, d := range spec.Shape {
			if d <= 0 {
				return nil, nil, fmt.Errorf("tensor %q: shape %v has a dimension < 1", spec.Name, spec.Shape)
			}
		}
		t, err := ort.NewEmptyTensor[float32](ort.NewShape(spec.Shape...))
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", spec.Name, err)
		}
		*dst = append(*dst, t)
		names = append(names, spec.Name)
		vals = append(vals, t)
	}
	return names, vals, nil
}

// Run copies inputs (one slice per input spec, in order, each exactly the
// tensor's element count) into the session's tensors, runs the model and
// copies the outputs into outputs (likewise). It allocates nothing.
func (s *Session) Run(inputs, outputs [][]float32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("inference: run on a closed session")
	}
	if err := match("input", inputs, s.in); err != nil {
		return fmt.Errorf("inference: session %s: %w", s.name, err)
	}
	if err := match("output", outputs, s.out); err != nil {
		return fmt.Errorf("inference: session %s: %w", s.name, err)
	}
	for i, t := range s.in {
		copy(t.GetData(), inputs[i])
	}
	if err := s.sess.Run(); err != nil {
		return fmt.Errorf("inference: session %s: %w", s.name, err)
	}
	for i, t := range s.out {
		copy(outputs[i], t.GetData())
	}
	return nil
}

func match(kind string, got [][]float32, want []*ort.Tensor[float32]) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d %ss given; want %d", len(got), kind, len(want))
	}
	var bad []string
	for i, t := range want {
		if n := len(t.GetData()); len(got[i]) != n {
			bad = append(bad, fmt.Sprintf("%s %d has %d values, want %d", kind, i, len(got[i]), n))
		}
	}
	if bad != nil {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// Close frees the session and its tensors and drops the environment
// reference. It waits for a Run in progress and is idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.free()
	return releaseEnv()
}

func (s *Session) free() {
	if s.sess != nil {
		s.sess.Destroy()
		s.sess = nil
	}
	for _, t := range append(s.in, s.out...) {
		t.Destroy()
	}
	s.in, s.out = nil, nil
}
