// Package codectest decodes what the worker encodes, for tests: VP8 frames
// back to pictures with libvpx (through pion/mediadevices), one frame per
// read, as a viewer's decoder sees them.
package codectest

import (
	"bytes"
	"image"
	"io"
	"testing"

	"github.com/pion/mediadevices/pkg/codec/vpx"
	"github.com/pion/mediadevices/pkg/prop"
)

// Packets is an io.Reader handing a decoder one queued frame per Read.
type Packets struct{ q [][]byte }

// Push queues a copy of frame.
func (p *Packets) Push(frame []byte) { p.q = append(p.q, bytes.Clone(frame)) }

// Read implements io.Reader: the next queued frame whole, or
// io.ErrShortBuffer if b cannot hold it.
func (p *Packets) Read(b []byte) (int, error) {
	if len(p.q) == 0 {
		return 0, io.EOF
	}
	if len(p.q[0]) > len(b) {
		return 0, io.ErrShortBuffer
	}
	n := copy(b, p.q[0])
	p.q = p.q[1:]
	return n, nil
}

// DecodeVP8 decodes a w×h VP8 stream frame by frame; every frame must
// decode to a w×h picture. The pictures are copies the caller keeps.
func DecodeVP8(tb testing.TB, frames [][]byte, w, h int) []*image.YCbCr {
	tb.Helper()
	src := &Packets{}
	d, err := vpx.NewDecoder(src, prop.Media{Video: prop.Video{Width: w, Height: h}})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	out := make([]*image.YCbCr, 0, len(frames))
	for i, f := range frames {
		src.Push(f)
		img, release, err := d.Read()
		if err != nil {
			tb.Fatalf("decode VP8 frame %d: %v", i, err)
		}
		y, ok := img.(*image.YCbCr)
		if !ok || y.Rect.Dx() != w || y.Rect.Dy() != h {
			tb.Fatalf("VP8 frame %d: decoded %T %v, want %dx%d", i, img, img.Bounds(), w, h)
		}
		c := *y
		c.Y, c.Cb, c.Cr = bytes.Clone(y.Y), bytes.Clone(y.Cb), bytes.Clone(y.Cr)
		out = append(out, &c)
		release()
	}
	return out
}
