package inference

import (
	"fmt"
	"time"

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

// readMetadata reads what the model declares in its custom metadata
// (ModelProto metadata_props), in one pass over the file: its look-ahead
// and its paste mode, validated.
func (m *Model) readMetadata() (lookAhead time.Duration, paste string, err error) {
	var md *ort.ModelMetadata
	if m.path != "" {
		md, err = ort.GetModelMetadata(m.path)
	} else {
		md, err = ort.GetModelMetadataWithONNXData(m.data)
	}
	if err != nil {
		return 0, "", fmt.Errorf("reading metadata: %w", err)
	}
	defer func() { _ = md.Destroy() }()
	v, ok, err := md.LookupCustomMetadataMap(LookAheadKey)
	if err != nil {
		return 0, "", fmt.Errorf("reading metadata %s: %w", LookAheadKey, err)
	}
	if lookAhead, err = parseLookAhead(v, ok); err != nil {
		return 0, "", err
	}
	if v, ok, err = md.LookupCustomMetadataMap(PasteKey); err != nil {
		return 0, "", fmt.Errorf("reading metadata %s: %w", PasteKey, err)
	}
	if paste, err = parsePaste(v, ok); err != nil {
		return 0, "", err
	}
	return lookAhead, paste, nil
}

// parsePaste validates a declared paste mode; a missing one is
// PasteReplace.
func parsePaste(v string, present bool) (string, error) {
	switch {
	case !present:
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
