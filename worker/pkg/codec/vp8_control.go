package codec

// #cgo pkg-config: vpx
// #include <vpx/vpx_encoder.h>
// #include <vpx/vp8cx.h>
//
// static int avf_vp8_controls(void *ctx, int cpu_used, unsigned int max_intra_pct) {
//   vpx_codec_ctx_t *c = (vpx_codec_ctx_t *)ctx;
//   vpx_codec_err_t err = vpx_codec_control(c, VP8E_SET_CPUUSED, cpu_used);
//   if (err != VPX_CODEC_OK) return (int)err;
//   return (int)vpx_codec_control(c, VP8E_SET_MAX_INTRA_BITRATE_PCT, max_intra_pct);
// }
import "C"

import (
	"fmt"
	"reflect"
	"strings"
	"unsafe"

	mdcodec "github.com/pion/mediadevices/pkg/codec"
)

// setVP8Controls applies the libvpx controls mediadevices has no option for
// to the encoder rc it built: the fixed real-time speed (cpu-used −speed)
// and the keyframe size cap (maxIntraPct percent of an average frame).
//
// mediadevices keeps the libvpx context (a C allocation, valid until Close)
// in the unexported field codec of its *encoder; it is read by reflection.
// The field is checked by name and type, so a mediadevices upgrade that
// moves it makes this an error at NewVP8Encoder (and a failing test), not a
// crash. The context is replaced only when the frame size changes, which
// VP8Encoder never lets happen.
func setVP8Controls(rc mdcodec.ReadCloser, speed, maxIntraPct int) error {
	v := reflect.ValueOf(rc)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("vp8: mediadevices encoder is a %T, not a pointer to a struct", rc)
	}
	f := v.Elem().FieldByName("codec")
	if !f.IsValid() || f.Kind() != reflect.Pointer || !strings.HasSuffix(f.Type().Elem().Name(), "struct_vpx_codec_ctx") || f.IsNil() {
		return fmt.Errorf("vp8: mediadevices encoder %T has no libvpx context field", rc)
	}
	ctx := unsafe.Pointer(f.Pointer())
	if rc := C.avf_vp8_controls(ctx, C.int(-speed), C.uint(maxIntraPct)); rc != C.VPX_CODEC_OK {
		return fmt.Errorf("vp8: vpx_codec_control: %s", C.GoString(C.vpx_codec_err_to_string(C.vpx_codec_err_t(rc))))
	}
	return nil
}
