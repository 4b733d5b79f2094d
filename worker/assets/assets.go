// Package assets embeds the files the worker and its tools need at run
// time, so that they work from a user's clone and from a built binary
// without reading anything outside the module:
//
//   - avatars/default/astronaut.png: the photo the default avatar is built
//     from (public-domain NASA photograph of Eileen Collins, via
//     scikit-image's sample data).
//   - models/face-detector-rfb-320.onnx: the face detector
//     (Ultra-Light-Fast-Generic-Face-Detector-1MB, RFB-320; MIT, see
//     models/face-detector-LICENSE.txt), used by pkg/facedetect.
//
// NOTICE.txt (here and beside each copied file) carries the attribution.
package assets

import _ "embed"

// AstronautPNG is avatars/default/astronaut.png: 512×512 RGB, one frontal
// face at about x1=180, y1=61, x2=269, y2=174.
//
//go:embed avatars/default/astronaut.png
var AstronautPNG []byte

// FaceDetectorONNX is models/face-detector-rfb-320.onnx: input "input"
// float32 [1,3,240,320], outputs "scores" [1,4420,2] and "boxes"
// [1,4420,4].
//
//go:embed models/face-detector-rfb-320.onnx
var FaceDetectorONNX []byte

// FaceDetectorLicense is the detector's MIT licence text.
//
//go:embed models/face-detector-LICENSE.txt
var FaceDetectorLicense string

// Notice is the attribution to keep beside copies of these files.
//
//go:embed NOTICE.txt
var Notice string
