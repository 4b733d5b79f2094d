package avatar

import (
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// DefaultMaxBytes is LoadOptions.MaxBytes's default: the converted I420
// frames of one pack (width·height·1.5 bytes each).
const DefaultMaxBytes = 512 << 20

// LoadOptions configures Load and LoadLibrary. The zero value is the
// defaults.
type LoadOptions struct {
	// MaxBytes bounds one pack's converted frames; 0 means
	// DefaultMaxBytes.
	MaxBytes int64
	// Workers bounds the frames decoded at once; 0 means GOMAXPROCS.
	Workers int
	// Default is LoadLibrary's default avatar when its directory has no
	// "default" pack; nil means build it with Default(). Passing the
	// previous library's default saves rebuilding it on a reload.
	Default *Pack
}

func (o LoadOptions) maxBytes() int64 {
	if o.MaxBytes > 0 {
		return o.MaxBytes
	}
	return DefaultMaxBytes
}

func (o LoadOptions) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// Pack is a loaded (or built) avatar: its manifest and its frames as I420.
// A Pack is immutable and safe for concurrent use; the frames it returns
// are shared and must not be modified (copy one with Clone or
// frame.I420.CopyFrom first).
type Pack struct {
	m      Manifest
	frames []*frame.I420
	// src are the RGB frames a Build made, kept so that Save writes them
	// losslessly; nil for a loaded pack (Save then writes the I420 frames
	// back as RGB).
	src []image.Image
}

// Load reads and validates the pack in dir and converts its frames.
func Load(dir string, opts LoadOptions) (*Pack, error) {
	p, err := load(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("avatar: loading pack %s: %w", dir, err)
	}
	return p, nil
}

func load(dir string, opts LoadOptions) (*Pack, error) {
	// An os.Root keeps every open inside dir, symbolic links included.
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	data, err := readLimited(root, ManifestFile, MaxManifestSize)
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, err
	}
	need := int64(m.Frames) * int64(m.Width) * int64(m.Height) * 3 / 2
	if need > opts.maxBytes() {
		return nil, fmt.Errorf("%w: %d frames of %dx%d need %d bytes as I420, above the limit of %d",
			ErrInvalid, m.Frames, m.Width, m.Height, need, opts.maxBytes())
	}
	p := &Pack{m: *m, frames: make([]*frame.I420, m.Frames)}
	var g errgroup.Group
	g.SetLimit(opts.workers())
	for i := range m.Frames {
		g.Go(func() error {
			f, err := loadFrame(root, FramePath(i), m.Width, m.Height)
			if err != nil {
				return err
			}
			p.frames[i] = f
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	p.m = migrate(p.m, p.frames[0])
	return p, nil
}

// migrate upgrades a version-1 manifest to the current version: the mouth
// is located on frame 0 within the face the crop box was padded from (see
// cropFace) and kept if it fits every face box; if none is found the pack
// has no mouth. A current manifest is returned as it is.
func migrate(m Manifest, frame0 image.Image) Manifest {
	if m.Version == FormatVersion {
		return m
	}
	m.Version = FormatVersion
	mouth, err := LocateMouth(frame0, cropFace(m.Box(0)))
	if err != nil {
		return m
	}
	m.Mouths = []ManifestMouth{manifestMouth(mouth)}
	if m.Validate() != nil {
		m.Mouths = nil
	}
	return m
}

// readLimited reads a regular file of at most limit bytes.
func readLimited(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := checkRegular(f, name, limit); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is above %d bytes", ErrInvalid, name, limit)
	}
	return data, nil
}

func checkRegular(f *os.File, name string, limit int64) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrInvalid, name)
	}
	if st.Size() > limit {
		return fmt.Errorf("%w: %s is %d bytes, above %d", ErrInvalid, name, st.Size(), limit)
	}
	return nil
}

// loadFrame decodes one PNG frame, checking its size from the header
// before decoding the pixels.
func loadFrame(root *os.Root, name string, w, h int) (*frame.I420, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := checkRegular(f, name, MaxFrameFile); err != nil {
		return nil, err
	}
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	if cfg.Width != w || cfg.Height != h {
		return nil, fmt.Errorf("%w: %s is %dx%d; the manifest says %dx%d", ErrInvalid, name, cfg.Width, cfg.Height, w, h)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	img, err := png.Decode(io.LimitReader(f, MaxFrameFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	fr, err := frame.FromImage(img)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return fr, nil
}

// newPack checks m and frames (all the manifest's size) and makes a Pack.
func newPack(m Manifest, frames []*frame.I420, src []image.Image) (*Pack, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if len(frames) != m.Frames {
		return nil, fmt.Errorf("%w: %d frames for a manifest of %d", ErrInvalid, len(frames), m.Frames)
	}
	for i, f := range frames {
		if f == nil || f.Width() != m.Width || f.Height() != m.Height {
			return nil, fmt.Errorf("%w: frame %d is not %dx%d", ErrInvalid, i, m.Width, m.Height)
		}
	}
	return &Pack{m: m, frames: frames, src: src}, nil
}

// Manifest is a copy of the pack's manifest.
func (p *Pack) Manifest() Manifest {
	m := p.m
	m.FaceBoxes = make([][]int, len(p.m.FaceBoxes))
	for i, b := range p.m.FaceBoxes {
		m.FaceBoxes[i] = append([]int(nil), b...)
	}
	if p.m.Idle != nil {
		idle := *p.m.Idle
		m.Idle = &idle
	}
	if p.m.Mouths != nil {
		m.Mouths = make([]ManifestMouth, len(p.m.Mouths))
		for i, mm := range p.m.Mouths {
			mm.Box = append([]int(nil), mm.Box...)
			mm.Left = append([]int(nil), mm.Left...)
			mm.Right = append([]int(nil), mm.Right...)
			m.Mouths[i] = mm
		}
	}
	return m
}

// Mouth is frame i's mouth (0..Len−1) and whether the pack knows it (see
// "Mouth" in the package documentation for packs without one).
func (p *Pack) Mouth(i int) (Mouth, bool) { return p.m.Mouth(i) }

// Name is the avatar's name.
func (p *Pack) Name() string { return p.m.Name }

// Width and Height are every frame's size.
func (p *Pack) Width() int  { return p.m.Width }
func (p *Pack) Height() int { return p.m.Height }

// FPS is the frame rate the pack was made for.
func (p *Pack) FPS() int { return p.m.FPS }

// Len is the number of frames.
func (p *Pack) Len() int { return len(p.frames) }

// Image is frame i (0..Len−1), shared: do not modify it.
func (p *Pack) Image(i int) *frame.I420 { return p.frames[i] }

// Box is frame i's face box in frame pixels.
func (p *Pack) Box(i int) image.Rectangle { return p.m.Box(i) }

// Index is the frame index the idle loop shows at tick t (see "Idle loop"
// in the package documentation); a negative t counts as 0.
func (p *Pack) Index(t int) int {
	first, last, mode := p.m.loop()
	return loopIndex(max(t, 0), first, last, mode)
}

// Period is the idle loop's length in ticks: Index(t+Period()) equals
// Index(t) for every t ≥ 0 (last−first+1 frames looped, 2·(last−first)
// ping-ponged, 1 for a one-frame loop).
func (p *Pack) Period() int {
	first, last, mode := p.m.loop()
	return loopPeriod(first, last, mode)
}

func loopPeriod(first, last int, mode string) int {
	n := last - first
	switch {
	case n == 0:
		return 1
	case mode == Loop:
		return n + 1
	}
	return 2 * n
}

func loopIndex(t, first, last int, mode string) int {
	n := last - first
	if n == 0 {
		return first
	}
	if mode == Loop {
		return first + t%(n+1)
	}
	k := t % (2 * n)
	if k <= n {
		return first + k
	}
	return first + 2*n - k
}

// Frame is the idle loop's frame at tick t and its face box.
func (p *Pack) Frame(t int) (*frame.I420, image.Rectangle) {
	i := p.Index(t)
	return p.frames[i], p.m.Box(i)
}
