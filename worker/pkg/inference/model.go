package inference

import (
	"errors"
	"fmt"
	"os"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// Model is a lip-sync model checked against the contract. It holds the
// model's file name or bytes and what matching found; every Context opens
// its own ONNX Runtime session from them. Methods are safe for concurrent
// use.
type Model struct {
	rt   *Runtime
	name string // file path, or a description of in-memory bytes
	path string // set for a file
	data []byte // set for bytes
	c    contract
	// lookAhead is the declared audio look-ahead (lookahead.go).
	lookAhead time.Duration
	// paste is the declared paste mode (paste.go).
	paste string
}

// LoadModel reads an ONNX file and matches its inputs and output with the
// contract; a model that does not honour it gives a *ContractError.
// Inspecting a model opens (and closes) a session, so this costs about as
// much as one NewContext.
//
// The file is checked before ONNX Runtime reads it: it must be a regular
// file of at most MaxModelBytes (every NewContext reads it again).
func (r *Runtime) LoadModel(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("inference: loading model: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("inference: loading model %s: not a regular file", path)
	}
	if st.Size() > MaxModelBytes {
		return nil, fmt.Errorf("inference: loading model %s: %d bytes, above the limit of %d", path, st.Size(), int64(MaxModelBytes))
	}
	return r.load(&Model{rt: r, name: path, path: path})
}

// MaxModelBytes is the largest model LoadModel and LoadModelData take: 2
// GiB, protobuf's own limit for an ONNX file without external data.
const MaxModelBytes = 2 << 30

// LoadModelData is LoadModel for a model held in memory (onnxgen's default
// model, for instance). The Model keeps data; the caller must not modify it.
func (r *Runtime) LoadModelData(name string, data []byte) (*Model, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("inference: loading model %s: no data", name)
	}
	if int64(len(data)) > MaxModelBytes {
		return nil, fmt.Errorf("inference: loading model %s: %d bytes, above the limit of %d", name, len(data), int64(MaxModelBytes))
	}
	return r.load(&Model{rt: r, name: name, data: data})
}

func (r *Runtime) load(m *Model) (*Model, error) {
	if err := r.hold(); err != nil {
		return nil, err
	}
	defer releaseEnv()
	var inputs, outputs []ort.InputOutputInfo
	var err error
	if m.path != "" {
		inputs, outputs, err = ort.GetInputOutputInfo(m.path)
	} else {
		inputs, outputs, err = ort.GetInputOutputInfoWithONNXData(m.data)
	}
	if err != nil {
		return nil, fmt.Errorf("inference: loading model %s: %w", m.name, err)
	}
	if m.c, err = matchContract(inputs, outputs); err != nil {
		var ce *ContractError
		if errors.As(err, &ce) {
			ce.Msg = "model " + m.name + ": " + ce.Msg
		}
		return nil, err
	}
	if m.lookAhead, m.paste, err = m.readMetadata(); err != nil {
		var ce *ContractError
		if errors.As(err, &ce) {
			ce.Msg = "model " + m.name + ": " + ce.Msg
			return nil, err
		}
		return nil, fmt.Errorf("inference: loading model %s: %w", m.name, err)
	}
	return m, nil
}

// Name is the model's file path, or the name given to LoadModelData.
func (m *Model) Name() string { return m.name }

// Mel is the input matched as the mel window [B,1,80,16].
func (m *Model) Mel() TensorInfo { return m.c.mel }

// Face is the input matched as the face stack [B,6,S,S].
func (m *Model) Face() TensorInfo { return m.c.face }

// Output is the output matched as the generated face [B,3,S,S].
func (m *Model) Output() TensorInfo { return m.c.out }

// Batch is the model's fixed batch size, or 0 when the batch is dynamic.
func (m *Model) Batch() int { return dimOrZero(m.c.batch) }

// Size is the model's fixed face size S, or 0 when S is dynamic.
func (m *Model) Size() int { return dimOrZero(m.c.size) }

func dimOrZero(d int64) int {
	if d == Dynamic {
		return 0
	}
	return int(d)
}
