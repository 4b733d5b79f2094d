package codec

// #cgo pkg-config: vpx
// #include <stdlib.h>
// #include <string.h>
// #include <vpx/vpx_encoder.h>
// #include <vpx/vp8cx.h>
//
// typedef struct {
//   vpx_codec_ctx_t ctx;
//   vpx_image_t img;
//   unsigned char dummy[4];
// } avf_loop_enc;
//
// static int avf_loop_init(avf_loop_enc *e, unsigned int w, unsigned int h, unsigned int fps, unsigned int kbps) {
//   vpx_codec_enc_cfg_t cfg;
//   vpx_codec_err_t err = vpx_codec_enc_config_default(vpx_codec_vp8_cx(), &cfg, 0);
//   if (err != VPX_CODEC_OK) return (int)err;
//   cfg.g_w = w; cfg.g_h = h;
//   cfg.g_timebase.num = 1; cfg.g_timebase.den = fps;
//   cfg.g_lag_in_frames = 0;
//   cfg.g_error_resilient = 0;
//   cfg.g_pass = VPX_RC_ONE_PASS;
//   cfg.rc_end_usage = VPX_CBR;
//   cfg.rc_min_quantizer = 2; cfg.rc_max_quantizer = 56;
//   cfg.rc_undershoot_pct = 100; cfg.rc_overshoot_pct = 15;
//   cfg.rc_target_bitrate = kbps;
//   cfg.rc_resize_allowed = 0;
//   cfg.kf_mode = VPX_KF_DISABLED;
//   err = vpx_codec_enc_init(&e->ctx, vpx_codec_vp8_cx(), &cfg, 0);
//   if (err != VPX_CODEC_OK) return (int)err;
//   if (vpx_img_wrap(&e->img, VPX_IMG_FMT_I420, w, h, 1, e->dummy) == NULL) {
//     vpx_codec_destroy(&e->ctx);
//     return (int)VPX_CODEC_MEM_ERROR;
//   }
//   return 0;
// }
//
// // avf_loop_encode encodes one frame at pts (in frames); the planes are
// // only borrowed for the call.
// static int avf_loop_encode(avf_loop_enc *e, long pts, int key,
//     unsigned char *y, int ys, unsigned char *u, unsigned char *v, int cs) {
//   e->img.planes[0] = y; e->img.planes[1] = u; e->img.planes[2] = v;
//   e->img.stride[0] = ys; e->img.stride[1] = cs; e->img.stride[2] = cs;
//   vpx_codec_err_t err = vpx_codec_encode(&e->ctx, &e->img, pts, 1, key ? VPX_EFLAG_FORCE_KF : 0, VPX_DL_REALTIME);
//   e->img.planes[0] = e->img.planes[1] = e->img.planes[2] = NULL;
//   return (int)err;
// }
//
// // avf_loop_next finds the next frame packet: its data (valid until the
// // next encode) and size, or -1 when there is none.
// static long avf_loop_next(avf_loop_enc *e, vpx_codec_iter_t *it, int *key, const void **buf) {
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
// static void avf_loop_close(avf_loop_enc *e) {
//   vpx_codec_destroy(&e->ctx);
//   free(e);
// }
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// VP8SequenceEncoder encodes a fixed sequence of frames offline, as fast as
// the CPU allows, with the same libvpx settings as VP8Encoder (CBR,
// cpu-used, static threshold, keyframe cap) but on a media clock of its
// own: frame k is stamped k/25 s, so the rate control budgets every frame
// as one 25 fps frame however fast they are encoded (VP8Encoder, through
// mediadevices, stamps frames from the wall clock and must be paced).
// Keyframes come only where Encode asks for one. It drives libvpx
// directly; it is for one goroutine at a time.
type VP8SequenceEncoder struct {
	w, h int
	enc  *C.avf_loop_enc // C memory: libvpx keeps pointers into it
	pts  int64
}

// NewVP8SequenceEncoder starts a sequence encoder; opts as for
// NewVP8Encoder (KeyframeInterval is ignored: Encode says where keyframes
// go).
func NewVP8SequenceEncoder(opts VP8Options) (*VP8SequenceEncoder, error) {
	if opts.Width < 2 || opts.Height < 2 || opts.Width%2 != 0 || opts.Height%2 != 0 || opts.Width > frame.MaxDim || opts.Height > frame.MaxDim {
		return nil, fmt.Errorf("vp8 sequence: frame size %dx%d (want even, 2..%d)", opts.Width, opts.Height, frame.MaxDim)
	}
	if opts.Bitrate == 0 {
		opts.Bitrate = DefaultVP8Bitrate
	}
	if opts.Bitrate < 10_000 || opts.Bitrate > 100_000_000 {
		return nil, fmt.Errorf("vp8 sequence: bitrate %d bit/s out of 10k..100M", opts.Bitrate)
	}
	if opts.Speed == 0 {
		opts.Speed = DefaultVP8Speed
	}
	if opts.Speed < 1 || opts.Speed > 16 {
		return nil, fmt.Errorf("vp8 sequence: speed %d out of 1..16", opts.Speed)
	}
	enc := (*C.avf_loop_enc)(C.calloc(1, C.size_t(unsafe.Sizeof(C.avf_loop_enc{}))))
	if enc == nil {
		return nil, fmt.Errorf("vp8 sequence: out of memory")
	}
	if rc := C.avf_loop_init(enc, C.uint(opts.Width), C.uint(opts.Height), C.uint(VP8FrameRate), C.uint(opts.Bitrate/1000)); rc != 0 {
		C.free(unsafe.Pointer(enc))
		return nil, fmt.Errorf("vp8 sequence: init: %s", C.GoString(C.vpx_codec_err_to_string(C.vpx_codec_err_t(rc))))
	}
	e := &VP8SequenceEncoder{w: opts.Width, h: opts.Height, enc: enc}
	ctl := vp8Controls{speed: opts.Speed, staticThreshold: staticThreshold, maxIntraPct: maxIntraPct}
	if err := applyVP8Controls(unsafe.Pointer(&enc.ctx), ctl); err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("vp8 sequence: %w", err)
	}
	return e, nil
}

// Encode encodes the next frame of the sequence, a keyframe if key, and
// returns its VP8 frame (newly allocated) and whether it is a keyframe.
func (e *VP8SequenceEncoder) Encode(f *frame.I420, key bool) ([]byte, bool, error) {
	if e.enc == nil {
		return nil, false, fmt.Errorf("vp8 sequence: %w", ErrClosed)
	}
	if f.Width() != e.w || f.Height() != e.h {
		return nil, false, fmt.Errorf("vp8 sequence: frame is %dx%d, encoder is %dx%d", f.Width(), f.Height(), e.w, e.h)
	}
	k := C.int(0)
	if key {
		k = 1
	}
	rc := C.avf_loop_encode(e.enc, C.long(e.pts), k,
		(*C.uchar)(unsafe.Pointer(&f.Y[0])), C.int(f.YStride),
		(*C.uchar)(unsafe.Pointer(&f.Cb[0])), (*C.uchar)(unsafe.Pointer(&f.Cr[0])), C.int(f.CStride))
	if rc != 0 {
		return nil, false, fmt.Errorf("vp8 sequence: encode frame %d: %s", e.pts, C.GoString(C.vpx_codec_err_to_string(C.vpx_codec_err_t(rc))))
	}
	e.pts++
	var out []byte
	isKey := false
	var it C.vpx_codec_iter_t
	for {
		var kf C.int
		var buf unsafe.Pointer
		n := C.avf_loop_next(e.enc, &it, &kf, &buf)
		if n < 0 {
			break
		}
		isKey = isKey || kf != 0
		out = append(out, C.GoBytes(buf, C.int(n))...)
	}
	if len(out) == 0 {
		return nil, false, fmt.Errorf("vp8 sequence: frame %d: the encoder gave no packet", e.pts-1)
	}
	return out, isKey, nil
}

// Close releases the encoder; Close again is a no-op.
func (e *VP8SequenceEncoder) Close() error {
	if e.enc != nil {
		C.avf_loop_close(e.enc)
		e.enc = nil
	}
	return nil
}
