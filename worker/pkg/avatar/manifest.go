// Package avatar holds avatar packs: the still frames an avatar session
// shows while it is idle and composites the generated mouth into while it
// speaks, with the face box of each frame.
//
// # Pack format (version 2)
//
// A pack is a directory named after the avatar:
//
//	alice/
//	  avatar.json
//	  frames/000000.png
//	  frames/000001.png
//	  …
//
// avatar.json (at most 1 MiB; unknown fields are errors):
//
//	{
//	  "name": "alice",          // ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$, the directory's name
//	  "version": 2,             // format version: 2 is written, 1 and 2 are read
//	  "width": 512,             // every frame's size: even, 2..1920 × 2..1080
//	  "height": 512,            //   (either orientation: the long side ≤ 1920, the short ≤ 1080)
//	  "fps": 25,                // 1..60, the rate the frames were made for
//	  "frames": 50,             // N, 1..1500: files frames/000000.png … frames/{N-1}.png
//	  "face_boxes": [[176, 56, 96, 128], …],
//	                            // [x, y, w, h] in frame pixels: one per frame, or a single
//	                            // box for every frame; inside the frame, w and h ≥ 16
//	  "idle": {"mode": "pingpong", "first": 0, "last": 49}
//	                            // optional: the idle loop plays frames first..last
//	                            // (default all) forward then backward ("pingpong",
//	                            // the default: no jump cut) or forward and wrapping
//	                            // ("loop", for footage whose last frame flows into
//	                            // its first)
//	  "mouths": [{"box": [203, 139, 42, 15], "left": [203, 140], "right": [244, 141],
//	              "upper": 141, "line": 149, "lower": 153}]
//	                            // optional (version 2): where the lips are, one per
//	                            // frame or one for every frame (see Mouth); each
//	                            // inside its frame's face box, box [x, y, w, h] at
//	                            // least 8×4 and no taller than wide, corners [x, y]
//	                            // in the box with left.x < right.x, box top ≤ upper
//	                            // ≤ line ≤ lower < box bottom
//	}
//
// Frames are opaque PNG files (any colour type; transparency is not
// composited against anything), all of the manifest's size; each file is at most 32 MiB, and the whole pack, once
// converted, at most LoadOptions.MaxBytes (512 MiB by default: about 170
// frames at 1920×1080, 1365 at 512×512). Loading converts every frame
// once to frame.I420 (BT.601 limited range, the VP8 encoder's input).
//
// face_boxes are the lip-sync crop boxes (square, even-aligned): the part
// of each frame the model is given and its output pasted back into.
//
// # Versions
//
// Version 2 added "mouths". A version-1 pack still loads: Load locates its
// mouth on frame 0 (LocateMouth within the face its crop box was padded
// from, see cropFace) and the loaded pack is version 2, with that mouth or,
// if none is found, without one; its crop boxes are kept as they are. Save
// writes version 2.
//
// # Mouth
//
// Build locates the mouth in the photo (LocateMouth: lip colour in the
// lower face, refined by the dark line between the lips) and moves the
// crop box so that the mouth's centre sits where Wav2Lip-family models
// expect it: horizontally centred, at MouthRow (0.70) of the crop's height
// (see alignBox). The idle motion moves the lips by less than a pixel, so
// one mouth serves every frame. A pack without a mouth (none found: the
// build goes on, or a version-1 pack without one) keeps the crop padBox
// makes from the face box alone, as version 1 did; users of Pack.Mouth
// then fall back to the crop's geometry (the mouth in its lower half).
//
// # Idle loop
//
// Pack.Frame(t) is the frame to show at tick t (t counts from 0 at the
// frame rate). With "pingpong" over frames a..b the sequence is a, a+1, …,
// b, b−1, …, a+1, a, a+1, …: the period is 2(b−a) and no frame repeats at
// the turns. A one-frame loop is that frame forever.
//
// # Building a pack from a photo
//
// Build detects the one face in a photo, pads the box for the lip-sync
// crop and renders an idle loop of gentle breathing (see FromFace); Save
// writes the pack; cmd/avatarpack does both from the command line.
//
// The default avatar ("default") is built when it is loaded (Default,
// called once by LoadLibrary: about 0.5 s on two cores for 50 frames of
// 512×512, so no cache is kept) from the embedded astronaut photo
// (worker/assets), with its face box fixed in code (DefaultFace) so that
// loading needs no ONNX Runtime; TestDefaultFaceMatchesDetector keeps the
// box and the detector in step.
//
// # Library
//
// LoadLibrary loads every pack directory of a folder (the worker's
// --avatars) plus the default; a broken pack is left out and reported by
// Library.Problems instead of failing the others.
package avatar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"

	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// FormatVersion is the avatar.json version this package writes; it reads
// MinFormatVersion..FormatVersion (see "Versions" in the package
// documentation).
const (
	FormatVersion    = 2
	MinFormatVersion = 1
)

// Limits of the format.
const (
	MaxFrames       = 1500
	MaxLongSide     = 1920
	MaxShortSide    = 1080
	MinBoxSide      = 16
	MaxFPS          = 60
	MaxManifestSize = 1 << 20
	MaxFrameFile    = 32 << 20
)

// Idle loop modes.
const (
	PingPong = "pingpong"
	Loop     = "loop"
)

// ManifestFile is the manifest's name in a pack directory.
const ManifestFile = "avatar.json"

// Error is the type of this package's sentinel errors.
type Error string

// Error implements error.
func (e Error) Error() string { return string(e) }

// ErrInvalid is wrapped by every error about a pack that breaks the format
// (as opposed to, say, a file that cannot be read).
const ErrInvalid Error = "avatar: invalid pack"

// Manifest is avatar.json.
type Manifest struct {
	Name      string  `json:"name"`
	Version   int     `json:"version"`
	Width     int     `json:"width"`
	Height    int     `json:"height"`
	FPS       int     `json:"fps"`
	Frames    int     `json:"frames"`
	FaceBoxes [][]int `json:"face_boxes"`
	Idle      *Idle   `json:"idle,omitempty"`
	// Mouths (version 2) is where the lips are: one per frame, or one
	// for every frame, or none (not found).
	Mouths []ManifestMouth `json:"mouths,omitempty"`
}

// ManifestMouth is a Mouth as avatar.json writes it.
type ManifestMouth struct {
	Box   []int `json:"box"`   // [x, y, w, h]
	Left  []int `json:"left"`  // [x, y]
	Right []int `json:"right"` // [x, y]
	Upper int   `json:"upper"`
	Line  int   `json:"line"`
	Lower int   `json:"lower"`
}

func manifestMouth(m Mouth) ManifestMouth {
	return ManifestMouth{
		Box:   []int{m.Box.Min.X, m.Box.Min.Y, m.Box.Dx(), m.Box.Dy()},
		Left:  []int{m.Left.X, m.Left.Y},
		Right: []int{m.Right.X, m.Right.Y},
		Upper: m.Upper, Line: m.Line, Lower: m.Lower,
	}
}

// mouth converts mm, checking that every number is inside the w×h frame
// (so that no sum overflows).
func (mm ManifestMouth) mouth(w, h int) (Mouth, error) {
	if len(mm.Box) != 4 || len(mm.Left) != 2 || len(mm.Right) != 2 {
		return Mouth{}, errors.New("mouth must have box [x, y, w, h], left [x, y] and right [x, y]")
	}
	inX := func(v int) bool { return v >= 0 && v <= w }
	inY := func(v int) bool { return v >= 0 && v <= h }
	b := mm.Box
	if !inX(b[0]) || !inY(b[1]) || !inX(b[2]) || !inY(b[3]) || b[0] > w-b[2] || b[1] > h-b[3] {
		return Mouth{}, fmt.Errorf("mouth box %v is not inside the %dx%d frame", b, w, h)
	}
	if !inX(mm.Left[0]) || !inY(mm.Left[1]) || !inX(mm.Right[0]) || !inY(mm.Right[1]) ||
		!inY(mm.Upper) || !inY(mm.Line) || !inY(mm.Lower) {
		return Mouth{}, fmt.Errorf("mouth corners %v, %v or lip rows %d, %d, %d are outside the %dx%d frame",
			mm.Left, mm.Right, mm.Upper, mm.Line, mm.Lower, w, h)
	}
	return Mouth{
		Box:  image.Rect(b[0], b[1], b[0]+b[2], b[1]+b[3]),
		Left: image.Pt(mm.Left[0], mm.Left[1]), Right: image.Pt(mm.Right[0], mm.Right[1]),
		Upper: mm.Upper, Line: mm.Line, Lower: mm.Lower,
	}, nil
}

// Idle is the optional idle-loop hint.
type Idle struct {
	Mode  string `json:"mode,omitempty"`
	First int    `json:"first"`
	Last  int    `json:"last"`
}

// ParseManifest decodes and validates avatar.json.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, above %d", ErrInvalid, ManifestFile, len(data), MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, ManifestFile, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: data after the JSON object", ErrInvalid, ManifestFile)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest against the format's rules.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, ManifestFile, fmt.Sprintf(format, args...))
	}
	switch {
	case !fleetstore.ValidName(m.Name):
		return bad("name %q must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$", m.Name)
	case m.Version < MinFormatVersion || m.Version > FormatVersion:
		return bad("version %d, want %d..%d", m.Version, MinFormatVersion, FormatVersion)
	case m.Version < 2 && m.Mouths != nil:
		return bad("mouths need version 2")
	case m.Width < 2 || m.Height < 2 || m.Width%2 != 0 || m.Height%2 != 0:
		return bad("size %dx%d must be even and at least 2x2", m.Width, m.Height)
	case max(m.Width, m.Height) > MaxLongSide || min(m.Width, m.Height) > MaxShortSide:
		return bad("size %dx%d is above %dx%d", m.Width, m.Height, MaxLongSide, MaxShortSide)
	case m.FPS < 1 || m.FPS > MaxFPS:
		return bad("fps %d, want 1..%d", m.FPS, MaxFPS)
	case m.Frames < 1 || m.Frames > MaxFrames:
		return bad("frames %d, want 1..%d", m.Frames, MaxFrames)
	case len(m.FaceBoxes) != 1 && len(m.FaceBoxes) != m.Frames:
		return bad("%d face boxes for %d frames; want 1 or %d", len(m.FaceBoxes), m.Frames, m.Frames)
	}
	for i, b := range m.FaceBoxes {
		if len(b) != 4 {
			return bad("face box %d %v: want [x, y, w, h]", i, b)
		}
		// Written so that no sum can overflow.
		if b[2] < MinBoxSide || b[3] < MinBoxSide || b[0] < 0 || b[1] < 0 ||
			b[2] > m.Width || b[3] > m.Height || b[0] > m.Width-b[2] || b[1] > m.Height-b[3] {
			return bad("face box %d %v is not inside the %dx%d frame with sides ≥ %d", i, b, m.Width, m.Height, MinBoxSide)
		}
	}
	if n := len(m.Mouths); n > 1 && n != m.Frames {
		return bad("%d mouths for %d frames; want 0, 1 or %d", n, m.Frames, m.Frames)
	}
	frame := image.Rect(0, 0, m.Width, m.Height)
	for i, mm := range m.Mouths {
		mouth, err := mm.mouth(m.Width, m.Height)
		if err != nil {
			return bad("mouth %d: %v", i, err)
		}
		// A single mouth serves every frame: it must fit every face box.
		lo, hi := i, i+1
		if len(m.Mouths) == 1 && len(m.FaceBoxes) > 1 {
			lo, hi = 0, m.Frames
		}
		for j := lo; j < hi; j++ {
			if err := mouth.check(frame, m.Box(j)); err != nil {
				return bad("mouth %d (frame %d): %v", i, j, err)
			}
		}
	}
	if m.Idle != nil {
		id := m.Idle
		if id.Mode != "" && id.Mode != PingPong && id.Mode != Loop {
			return bad("idle mode %q, want %q or %q", id.Mode, PingPong, Loop)
		}
		if id.First < 0 || id.Last < id.First || id.Last >= m.Frames {
			return bad("idle frames %d..%d, want 0 ≤ first ≤ last < %d", id.First, id.Last, m.Frames)
		}
	}
	return nil
}

// Box is frame i's face box (image.Rectangle, Min inclusive, Max
// exclusive). i must be in 0..Frames−1.
func (m *Manifest) Box(i int) image.Rectangle {
	b := m.FaceBoxes[0]
	if len(m.FaceBoxes) > 1 {
		b = m.FaceBoxes[i]
	}
	return image.Rect(b[0], b[1], b[0]+b[2], b[1]+b[3])
}

// Mouth is frame i's mouth and whether the manifest has one. i must be in
// 0..Frames−1; the manifest must be valid.
func (m *Manifest) Mouth(i int) (Mouth, bool) {
	if len(m.Mouths) == 0 {
		return Mouth{}, false
	}
	mm := m.Mouths[0]
	if len(m.Mouths) > 1 {
		mm = m.Mouths[i]
	}
	mouth, err := mm.mouth(m.Width, m.Height)
	return mouth, err == nil
}

// loop is the idle range and mode with defaults filled in.
func (m *Manifest) loop() (first, last int, mode string) {
	first, last, mode = 0, m.Frames-1, PingPong
	if m.Idle != nil {
		first, last = m.Idle.First, m.Idle.Last
		if m.Idle.Mode != "" {
			mode = m.Idle.Mode
		}
	}
	return first, last, mode
}

// FramePath is frame i's file, relative to the pack directory.
func FramePath(i int) string { return fmt.Sprintf("frames/%06d.png", i) }
