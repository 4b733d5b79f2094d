package inference

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// PasteKey is the ONNX metadata key in which a model says how its output
// goes back into the frame (README, "Latency contract" and "The default
// model"): PasteChange, or, when absent, PasteReplace.
const PasteKey = "avatarfleet.paste"

// Paste modes a model may declare.
const (
	// PasteReplace: the output crop replaces the face box (Wav2Lip, which
	// regenerates the crop's lower half).
	PasteReplace = "replace"
	// PasteChange: only the output's difference from the reference is
	// blended in, so what the model leaves alone stays pixel for pixel
	// (the generated default model, which moves the mouth and jaw).
	PasteChange = "change"
)

// maxMetadataValue bounds a metadata value this package reads.
const maxMetadataValue = 64

// metadata looks key up in the model's custom metadata (ModelProto
// metadata_props).
func (m *Model) metadata(key string) (string, bool, error) {
	var md *ort.ModelMetadata
	var err error
	if m.path != "" {
		md, err = ort.GetModelMetadata(m.path)
	} else {
		md, err = ort.GetModelMetadataWithONNXData(m.data)
	}
	if err != nil {
		return "", false, fmt.Errorf("reading metadata: %w", err)
	}
	defer func() { _ = md.Destroy() }()
	v, ok, err := md.LookupCustomMetadataMap(key)
	if err != nil {
		return "", false, fmt.Errorf("reading metadata %s: %w", key, err)
	}
	return v, ok, nil
}

// readPaste reads and validates the declared paste mode.
func (m *Model) readPaste() (string, error) {
	v, ok, err := m.metadata(PasteKey)
	switch {
	case err != nil:
		return "", err
	case !ok:
		return PasteReplace, nil
	case v == PasteReplace || v == PasteChange:
		return v, nil
	}
	if len(v) > maxMetadataValue {
		v = v[:maxMetadataValue] + "…"
	}
	return "", contractErr("metadata %s = %q: want %q or %q", PasteKey, v, PasteChange, PasteReplace)
}

// Paste is the model's declared paste mode (PasteKey): PasteChange or
// PasteReplace.
func (m *Model) Paste() string { return m.paste }
