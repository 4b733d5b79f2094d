package codec

// #cgo pkg-config: vpx
// #include <stdlib.h>
// #include <string.h>
// #include <vpx/vpx_encoder.h>
// #include <vpx/vp8cx.h>
//
// // avf_vp8_enc is one encoder. It lives in C memory: libvpx keeps
// // pointers into it (the configuration among them), which Go memory
// // could not hold across calls.
// typedef struct {
//   vpx_codec_ctx_t ctx;
//   vpx_codec_enc_cfg_t cfg;
//   vpx_image_t img;
//   unsigned char dummy[4];
// } avf_vp8_enc;
//
// static int avf_vp8_init(avf_vp8_enc *e, unsigned int w, unsigned int h, unsigned int fps, unsigned int kbps) {
//   vpx_codec_err_t err = vpx_codec_enc_config_default(vpx_codec_vp8_cx(), &e->cfg, 0);
//   if (err != VPX_CODEC_OK) return (int)err;
//   vpx_codec_enc_cfg_t *c = &e->cfg;
//   c->g_w = w; c->g_h = h;
//   c->g_threads = 1;
//   c->g_timebase.num = 1; c->g_timebase.den = fps;
//   c->g_lag_in_frames = 0;
//   c->g_error_resilient = 0;
//   c->g_pass = VPX_RC_ONE_PASS;
//   c->rc_end_usage = VPX_CBR;
//   c->rc_min_quantizer = 2; c->rc_max_quantizer = 56;
//   c->rc_undershoot_pct = 100; c->rc_overshoot_pct = 15;
//   c->rc_dropframe_thresh = 0;
//   c->rc_target_bitrate = kbps;
//   c->rc_resize_allowed = 0;
//   c->kf_mode = VPX_KF_DISABLED;
//   err = vpx_codec_enc_init(&e->ctx, vpx_codec_vp8_cx(), &e->cfg, 0);
//   if (err != VPX_CODEC_OK) return (int)err;
//   if (vpx_img_wrap(&e->img, VPX_IMG_FMT_I420, w, h, 1, e->dummy) == NULL) {
//     vpx_codec_destroy(&e->ctx);
//     return (int)VPX_CODEC_MEM_ERROR;
//   }
//   return 0;
// }
//
// // avf_vp8_encode encodes one frame at pts (in frames); the planes are
// // only borrowed for the call.
// static int avf_vp8_encode(avf_vp8_enc *e, long pts, int key,
//     unsigned char *y, int ys, unsigned char *u, unsigned char *v, int cs) {
//   e->img.planes[0] = y; e->img.planes[1] = u; e->img.planes[2] = v;
//   e->img.stride[0] = ys; e->img.stride[1] = cs; e->img.stride[2] = cs;
//   vpx_codec_err_t err = vpx_codec_encode(&e->ctx, &e->img, pts, 1, key ? VPX_EFLAG_FORCE_KF : 0, VPX_DL_REALTIME);
//   e->img.planes[0] = e->img.planes[1] = e->img.planes[2] = NULL;
//   return (int)err;
// }
//
// // avf_vp8_next finds the next frame packet: its data (valid until the
// // next encode) and size, or -1 when there is none.
// static long avf_vp8_next(avf_vp8_enc *e, vpx_codec_iter_t *it, int *key, const void **buf) {
//   const vpx_codec_cx_pkt_t *p;
//   while ((p = vpx_codec_get_cx_data(&e->ctx, it)) != NULL) {
//     if (p->kind != VPX_CODEC_CX_FRAME_PKT) continue;
//     *key = (p->data.frame.flags & VPX_FRAME_IS_KEY) != 0;
//     *buf = p->data.frame.buf;
//     return (long)p->data.frame.sz;
//   }
//   return -1;
// }
//
// static int avf_vp8_set_bitrate(avf_vp8_enc *e, unsigned int kbps) {
//   e->cfg.rc_target_bitrate = kbps;
//   return (int)vpx_codec_enc_config_set(&e->ctx, &e->cfg);
// }
//
// // avf_vp8_set_roi gives macroblocks of segment 0 in map (rows×cols, one
// // byte each: 0 or 1; libvpx copies it) the encode breakout st0 and those of
// // segment 1 st1.
// static int avf_vp8_set_roi(avf_vp8_enc *e, unsigned int rows, unsigned int cols, unsigned char *map, unsigned int st0, unsigned int st1) {
//   vpx_roi_map_t roi;
//   memset(&roi, 0, sizeof roi);
//   roi.enabled = 1;
//   roi.roi_map = map; roi.rows = rows; roi.cols = cols;
//   roi.static_threshold[0] = st0; roi.static_threshold[1] = st1;
//   return (int)vpx_codec_control(&e->ctx, VP8E_SET_ROI_MAP, &roi);
// }
//
// static void avf_vp8_close(avf_vp8_enc *e) {
//   vpx_codec_destroy(&e->ctx);
//   free(e);
// }
import "C"

import (
	"fmt"
	"image"
	"unsafe"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// vpxEncoder is a libvpx VP8 encoder driven directly, the core of both
// VP8Encoder and VP8SequenceEncoder: one thread, CBR, VPX_DL_REALTIME, no
// look-ahead, the controls of vp8Controls, and frames stamped on a 25 fps
// media clock of its own (frame k at k/25 s), so the rate control budgets
// every frame as one 25 fps frame whenever it is encoded. Keyframes come
// only where encode asks for one. It is for one goroutine at a time.
type vpxEncoder struct {
	what  string // names the encoder in errors
	w, h  int
	enc   *C.avf_vp8_enc
	pts   int64
	focus image.Rectangle // in macroblocks; empty: no region of interest
	roi   []byte          // the segment map, one byte per macroblock
}

// checkVP8Options fills opts' defaults and validates it.
func checkVP8Options(what string, opts *VP8Options) error {
	if opts.Width < 2 || opts.Height < 2 || opts.Width%2 != 0 || opts.Height%2 != 0 || opts.Width > frame.MaxDim || opts.Height > frame.MaxDim {
		return fmt.Errorf("%s: frame size %dx%d (want even, 2..%d)", what, opts.Width, opts.Height, frame.MaxDim)
	}
	if opts.Bitrate == 0 {
		opts.Bitrate = DefaultVP8Bitrate
	}
	if err := checkVP8Bitrate(what, opts.Bitrate); err != nil {
		return err
	}
	if opts.KeyframeInterval == 0 {
		opts.KeyframeInterval = DefaultKeyframeInterval
	}
	if opts.KeyframeInterval < 1 {
		return fmt.Errorf("%s: keyframe interval %d", what, opts.KeyframeInterval)
	}
	if opts.Speed == 0 {
		opts.Speed = DefaultVP8Speed
	}
	if opts.Speed < 1 || opts.Speed > 16 {
		return fmt.Errorf("%s: speed %d out of 1..16", what, opts.Speed)
	}
	return nil
}

func checkVP8Bitrate(what string, bps int) error {
	if bps < 10_000 || bps > 100_000_000 {
		return fmt.Errorf("%s: bitrate %d bit/s out of 10k..100M", what, bps)
	}
	return nil
}

// newVPXEncoder starts an encoder; opts must have passed checkVP8Options.
func newVPXEncoder(what string, opts VP8Options) (*vpxEncoder, error) {
	enc := (*C.avf_vp8_enc)(C.calloc(1, C.size_t(unsafe.Sizeof(C.avf_vp8_enc{}))))
	if enc == nil {
		return nil, fmt.Errorf("%s: out of memory", what)
	}
	if rc := C.avf_vp8_init(enc, C.uint(opts.Width), C.uint(opts.Height), C.uint(VP8FrameRate), C.uint(opts.Bitrate/1000)); rc != 0 {
		C.free(unsafe.Pointer(enc))
		return nil, fmt.Errorf("%s: init: %s", what, vpxError(rc))
	}
	e := &vpxEncoder{what: what, w: opts.Width, h: opts.Height, enc: enc}
	ctl := vp8Controls{speed: opts.Speed, staticThreshold: staticThreshold, maxIntraPct: maxIntraPct}
	if err := applyVP8Controls(unsafe.Pointer(&enc.ctx), ctl); err != nil {
		e.close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := e.setFocus(opts.Focus); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func vpxError(rc C.int) string {
	return C.GoString(C.vpx_codec_err_to_string(C.vpx_codec_err_t(rc)))
}

// encode encodes the next frame, a keyframe if key, and returns its VP8
// frame (newly allocated, the caller's to keep) and whether it is a
// keyframe.
func (e *vpxEncoder) encode(f *frame.I420, key bool) ([]byte, bool, error) {
	if e.enc == nil {
		return nil, false, fmt.Errorf("%s: %w", e.what, ErrClosed)
	}
	if f.Width() != e.w || f.Height() != e.h {
		return nil, false, fmt.Errorf("%s: frame is %dx%d, encoder is %dx%d", e.what, f.Width(), f.Height(), e.w, e.h)
	}
	k := C.int(0)
	if key {
		k = 1
	}
	rc := C.avf_vp8_encode(e.enc, C.long(e.pts), k,
		(*C.uchar)(unsafe.Pointer(&f.Y[0])), C.int(f.YStride),
		(*C.uchar)(unsafe.Pointer(&f.Cb[0])), (*C.uchar)(unsafe.Pointer(&f.Cr[0])), C.int(f.CStride))
	if rc != 0 {
		return nil, false, fmt.Errorf("%s: encode frame %d: %s", e.what, e.pts, vpxError(rc))
	}
	e.pts++
	var out []byte
	isKey := false
	var it C.vpx_codec_iter_t
	for {
		var kf C.int
		var buf unsafe.Pointer
		n := C.avf_vp8_next(e.enc, &it, &kf, &buf)
		if n < 0 {
			break
		}
		isKey = isKey || kf != 0
		if out == nil {
			out = C.GoBytes(buf, C.int(n))
		} else {
			out = append(out, unsafe.Slice((*byte)(buf), int(n))...)
		}
	}
	if len(out) == 0 {
		return nil, false, fmt.Errorf("%s: frame %d: the encoder gave no packet", e.what, e.pts-1)
	}
	return out, isKey, nil
}

// setBitrate changes the target from the next frame on.
func (e *vpxEncoder) setBitrate(bps int) error {
	if e.enc == nil {
		return fmt.Errorf("%s: %w", e.what, ErrClosed)
	}
	if rc := C.avf_vp8_set_bitrate(e.enc, C.uint(bps/1000)); rc != 0 {
		return fmt.Errorf("%s: set bitrate %d: %s", e.what, bps, vpxError(rc))
	}
	return nil
}

// setFocus makes r (in pixels; the face) the region of interest: its
// macroblocks, and one more all round (the face moves a little), keep the
// encode breakout staticThreshold, the others get backgroundStaticThreshold.
// An empty r clears the region. Setting the region it already has costs
// nothing.
//
// Once a region was set, clearing it puts every macroblock in segment 0
// rather than turning segmentation off: libvpx (vp8_set_roimap) turns it off
// without withdrawing a segment map update it has already scheduled, and a
// keyframe would then carry segment ids its header says are absent.
func (e *vpxEncoder) setFocus(r image.Rectangle) error {
	if e.enc == nil {
		return fmt.Errorf("%s: %w", e.what, ErrClosed)
	}
	cols, rows := (e.w+15)/16, (e.h+15)/16
	mb := image.Rectangle{}
	if !r.Empty() {
		mb = image.Rect(r.Min.X/16-1, r.Min.Y/16-1, (r.Max.X+15)/16+1, (r.Max.Y+15)/16+1).
			Intersect(image.Rect(0, 0, cols, rows))
	}
	if mb == e.focus && (e.roi != nil || mb.Empty()) {
		return nil
	}
	if e.roi == nil {
		e.roi = make([]byte, rows*cols)
	}
	for y := range rows {
		for x := range cols {
			seg := byte(1)
			if mb.Empty() || image.Pt(x, y).In(mb) {
				seg = 0
			}
			e.roi[y*cols+x] = seg
		}
	}
	if rc := C.avf_vp8_set_roi(e.enc, C.uint(rows), C.uint(cols), (*C.uchar)(&e.roi[0]),
		C.uint(staticThreshold), C.uint(backgroundStaticThreshold)); rc != 0 {
		return fmt.Errorf("%s: region of interest %v: %s", e.what, r, vpxError(rc))
	}
	e.focus = mb
	return nil
}

// close releases the encoder; close again is a no-op.
func (e *vpxEncoder) close() {
	if e.enc != nil {
		C.avf_vp8_close(e.enc)
		e.enc = nil
	}
}
