package inference

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// DefaultSize is the face size S a Context uses when neither the model
// nor ContextOptions fixes it (Wav2Lip's 96).
const DefaultSize = 96

// Device selects where a Context runs. The zero value is the CPU.
type Device struct {
	// GPU selects ONNX Runtime's CUDA execution provider.
	GPU bool
	// Index is the CUDA device_id (the session's GPU) when GPU is set.
	Index int
}

// CPU is the CPU device.
func CPU() Device { return Device{} }

// GPU is CUDA device i.
func GPU(i int) Device { return Device{GPU: true, Index: i} }

func (d Device) String() string {
	if d.GPU {
		return "gpu" + strconv.Itoa(d.Index)
	}
	return "cpu"
}

// DeviceError reports a device the ONNX Runtime library cannot run on.
// The library scripts/setup.sh installs (from onnxruntime-node) is
// CPU-only: the CUDA execution provider needs
// libonnxruntime_providers_shared.so and libonnxruntime_providers_cuda.so
// of the same release next to it (ONNX Runtime's GPU build), and CUDA and
// cuDNN on the host.
type DeviceError struct {
	Device Device
	Err    error
}

func (e *DeviceError) Error() string {
	return fmt.Sprintf("CUDA execution provider unavailable for %s (needs ONNX Runtime's CUDA provider libraries beside the library, and CUDA and cuDNN): %v", e.Device, e.Err)
}

func (e *DeviceError) Unwrap() error { return e.Err }

// ContextOptions configures NewContext. The zero value is batch 1, the
// model's S (DefaultSize if dynamic), one CPU thread.
type ContextOptions struct {
	// Batch is B, the frames per Run; 0 means 1, or the model's fixed batch.
	Batch int
	// Size is S; 0 means the model's fixed S, or DefaultSize.
	Size int
	// IntraOpThreads bounds ONNX Runtime's threads inside one operator;
	// 0 means 1, which suits many sessions sharing few cores. Inter-op
	// parallelism is always 1 (operators run one after another), and idle
	// threads sleep instead of spinning.
	IntraOpThreads int
	// Device is the CPU (zero value) or a CUDA GPU.
	Device Device
}

// Context is one avatar session's inference state: an ONNX Runtime
// session bound to input and output tensors of fixed shape, reused by
// every Run. Run and Close may be called from different goroutines, but
// Runs on one Context are serialised.
type Context struct {
	batch, size int
	device      Device
	lookAhead   time.Duration
	paste       string

	mu     sync.Mutex
	sess   *ort.AdvancedSession
	mel    *ort.Tensor[float32]
	face   *ort.Tensor[float32]
	out    *ort.Tensor[float32]
	closed bool
}

// NewContext opens a session of the model with tensors for opts.Batch
// frames of opts.Size.
func (m *Model) NewContext(opts ContextOptions) (*Context, error) {
	batch, size, threads, err := m.resolve(opts)
	if err != nil {
		return nil, err
	}
	if err := m.rt.hold(); err != nil {
		return nil, err
	}
	c := &Context{batch: batch, size: size, device: opts.Device, lookAhead: m.lookAhead, paste: m.paste}
	if err := c.open(m, threads); err != nil {
		c.free()
		releaseEnv()
		return nil, fmt.Errorf("inference: model %s on %s: %w", m.name, opts.Device, err)
	}
	return c, nil
}

// resolve fills in the defaults of opts and checks them against the model.
func (m *Model) resolve(opts ContextOptions) (batch, size, threads int, err error) {
	batch, size, threads = opts.Batch, opts.Size, opts.IntraOpThreads
	if batch < 0 || size < 0 || threads < 0 || opts.Device.Index < 0 {
		return 0, 0, 0, fmt.Errorf("inference: negative context option %+v", opts)
	}
	if b := m.Batch(); b != 0 {
		if batch != 0 && batch != b {
			return 0, 0, 0, fmt.Errorf("inference: model %s has a fixed batch of %d; cannot run batches of %d", m.name, b, batch)
		}
		batch = b
	}
	if batch == 0 {
		batch = 1
	}
	if s := m.Size(); s != 0 {
		if size != 0 && size != s {
			return 0, 0, 0, fmt.Errorf("inference: model %s has a fixed face size of %d; cannot run %d", m.name, s, size)
		}
		size = s
	}
	if size == 0 {
		size = DefaultSize
	}
	if threads == 0 {
		threads = 1
	}
	return batch, size, threads, nil
}

func (c *Context) open(m *Model, threads int) error {
	var err error
	b, s := int64(c.batch), int64(c.size)
	if c.mel, err = ort.NewEmptyTensor[float32](ort.NewShape(b, 1, MelBands, MelFrames)); err != nil {
		return fmt.Errorf("mel tensor: %w", err)
	}
	if c.face, err = ort.NewEmptyTensor[float32](ort.NewShape(b, FaceChannels, s, s)); err != nil {
		return fmt.Errorf("face tensor: %w", err)
	}
	if c.out, err = ort.NewEmptyTensor[float32](ort.NewShape(b, OutChannels, s, s)); err != nil {
		return fmt.Errorf("output tensor: %w", err)
	}
	so, err := sessionOptions(threads, c.device)
	if err != nil {
		return err
	}
	defer so.Destroy()
	in := []string{m.c.mel.Name, m.c.face.Name}
	inT := []ort.Value{c.mel, c.face}
	out := []string{m.c.out.Name}
	outT := []ort.Value{c.out}
	if m.path != "" {
		c.sess, err = ort.NewAdvancedSession(m.path, in, out, inT, outT, so)
	} else {
		c.sess, err = ort.NewAdvancedSessionWithONNXData(m.data, in, out, inT, outT, so)
	}
	if err != nil {
		return fmt.Errorf("creating session: %w", err)
	}
	return nil
}

func sessionOptions(threads int, dev Device) (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	if err := configure(so, threads, dev); err != nil {
		so.Destroy()
		return nil, err
	}
	return so, nil
}

func configure(so *ort.SessionOptions, threads int, dev Device) error {
	if err := so.SetIntraOpNumThreads(threads); err != nil {
		return fmt.Errorf("intra-op threads %d: %w", threads, err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return fmt.Errorf("inter-op threads: %w", err)
	}
	if err := so.SetExecutionMode(ort.ExecutionModeSequential); err != nil {
		return fmt.Errorf("execution mode: %w", err)
	}
	if err := so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
		return fmt.Errorf("disabling spinning: %w", err)
	}
	if !dev.GPU {
		return nil
	}
	cuda, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return &DeviceError{Device: dev, Err: err}
	}
	defer cuda.Destroy()
	if err := cuda.Update(map[string]string{"device_id": strconv.Itoa(dev.Index)}); err != nil {
		return &DeviceError{Device: dev, Err: err}
	}
	if err := so.AppendExecutionProviderCUDA(cuda); err != nil {
		return &DeviceError{Device: dev, Err: err}
	}
	return nil
}

// Batch is B: the frames each Run takes.
func (c *Context) Batch() int { return c.batch }

// Size is S: the face crops' width and height.
func (c *Context) Size() int { return c.size }

// LookAhead is the model's declared audio look-ahead (Model.LookAhead).
func (c *Context) LookAhead() time.Duration { return c.lookAhead }

// Paste is the model's declared paste mode (Model.Paste).
func (c *Context) Paste() string { return c.paste }

// Device is where the Context runs.
func (c *Context) Device() Device { return c.device }

// MelLen, FaceLen and OutLen are the lengths Run wants: B·80·16, B·6·S·S
// and B·3·S·S.
func (c *Context) MelLen() int  { return c.batch * MelBands * MelFrames }
func (c *Context) FaceLen() int { return c.batch * FaceChannels * c.size * c.size }
func (c *Context) OutLen() int  { return c.batch * OutChannels * c.size * c.size }

// Run infers B frames: mel holds B windows [1,80,16], face B stacks
// [6,S,S] (masked target, then reference; 0..1), both row-major; out
// receives B faces [3,S,S]. The slices must have exactly MelLen, FaceLen
// and OutLen elements. Run copies into the Context's tensors and back, and
// allocates nothing.
func (c *Context) Run(mel, face, out []float32) error {
	if len(mel) != c.MelLen() || len(face) != c.FaceLen() || len(out) != c.OutLen() {
		return fmt.Errorf("inference: run with %d/%d/%d mel/face/out values; want %d/%d/%d (B=%d, S=%d)",
			len(mel), len(face), len(out), c.MelLen(), c.FaceLen(), c.OutLen(), c.batch, c.size)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("inference: run on a closed context")
	}
	copy(c.mel.GetData(), mel)
	copy(c.face.GetData(), face)
	if err := c.sess.Run(); err != nil {
		return fmt.Errorf("inference: %w", err)
	}
	copy(out, c.out.GetData())
	return nil
}

// Close frees the session and the tensors. It waits for a Run in progress
// and is idempotent.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.free()
	return releaseEnv()
}

// free releases what open created (any part may be missing).
func (c *Context) free() {
	if c.sess != nil {
		c.sess.Destroy()
		c.sess = nil
	}
	for _, t := range []**ort.Tensor[float32]{&c.mel, &c.face, &c.out} {
		if *t != nil {
			(*t).Destroy()
			*t = nil
		}
	}
}
