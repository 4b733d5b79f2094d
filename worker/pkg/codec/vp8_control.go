package codec

// #cgo pkg-config: vpx
// #include <vpx/vpx_encoder.h>
// #include <vpx/vp8cx.h>
//
// typedef struct {
//   int cpu_used;
//   unsigned int static_threshold;
//   unsigned int noise_sensitivity;
//   int token_partitions;
//   unsigned int max_intra_pct;
//   unsigned int screen_content;
// } avf_vp8_ctl;
//
// // avf_vp8_controls applies c to the encoder; on failure *which is the
// // index of the control that failed.
// static int avf_vp8_controls(void *ctx, avf_vp8_ctl c, int *which) {
//   vpx_codec_ctx_t *x = (vpx_codec_ctx_t *)ctx;
//   vpx_codec_err_t err;
//   *which = 0;
//   if ((err = vpx_codec_control(x, VP8E_SET_CPUUSED, c.cpu_used)) != VPX_CODEC_OK) return (int)err;
//   *which = 1;
//   if ((err = vpx_codec_control(x, VP8E_SET_STATIC_THRESHOLD, c.static_threshold)) != VPX_CODEC_OK) return (int)err;
//   *which = 2;
//   if ((err = vpx_codec_control(x, VP8E_SET_NOISE_SENSITIVITY, c.noise_sensitivity)) != VPX_CODEC_OK) return (int)err;
//   *which = 3;
//   if ((err = vpx_codec_control(x, VP8E_SET_TOKEN_PARTITIONS, c.token_partitions)) != VPX_CODEC_OK) return (int)err;
//   *which = 4;
//   if ((err = vpx_codec_control(x, VP8E_SET_MAX_INTRA_BITRATE_PCT, c.max_intra_pct)) != VPX_CODEC_OK) return (int)err;
//   *which = 5;
//   return (int)vpx_codec_control(x, VP8E_SET_SCREEN_CONTENT_MODE, c.screen_content);
// }
import "C"

import (
	"fmt"
	"unsafe"
)

// vp8Controls are the libvpx VP8 encoder controls set after the
// configuration (vpx_codec_control).
type vp8Controls struct {
	// speed is the real-time speed: cpu-used −speed (1..16; a negative
	// cpu-used fixes the speed instead of letting libvpx adapt it to fill
	// the frame interval).
	speed int
	// staticThreshold is libvpx's encode breakout: a macroblock whose
	// prediction error (sum of squared differences) from the reference is
	// below it is coded as a skip without the rest of the mode search. 0
	// (libvpx's default) turns it off.
	staticThreshold int
	// noiseSensitivity is the temporal denoiser strength, 0 = off.
	noiseSensitivity int
	// tokenPartitions is log2 of the DCT token partitions (0 = one).
	tokenPartitions int
	// maxIntraPct caps a keyframe at this percent of an average frame.
	maxIntraPct int
	// screenContent is libvpx's screen content mode, 0 = off (camera-like
	// content).
	screenContent int
}

var vp8ControlNames = [...]string{"cpu-used", "static threshold", "noise sensitivity", "token partitions", "max intra bitrate pct", "screen content mode"}

// applyVP8Controls applies ctl to the libvpx encoder context ctx (a
// vpx_codec_ctx_t).
func applyVP8Controls(ctx unsafe.Pointer, ctl vp8Controls) error {
	c := C.avf_vp8_ctl{
		cpu_used:          C.int(-ctl.speed),
		static_threshold:  C.uint(ctl.staticThreshold),
		noise_sensitivity: C.uint(ctl.noiseSensitivity),
		token_partitions:  C.int(ctl.tokenPartitions),
		max_intra_pct:     C.uint(ctl.maxIntraPct),
		screen_content:    C.uint(ctl.screenContent),
	}
	var which C.int
	if rc := C.avf_vp8_controls(ctx, c, &which); rc != C.VPX_CODEC_OK {
		name := "?"
		if int(which) < len(vp8ControlNames) {
			name = vp8ControlNames[which]
		}
		return fmt.Errorf("vp8: vpx_codec_control %s: %s", name, C.GoString(C.vpx_codec_err_to_string(C.vpx_codec_err_t(rc))))
	}
	return nil
}
