package codec

// #cgo pkg-config: opus
// #include <opus.h>
//
// static int avf_opus_complexity(void *enc, int complexity) {
//   return opus_encoder_ctl((OpusEncoder *)enc, OPUS_SET_COMPLEXITY(complexity));
// }
//
// static int avf_opus_get_complexity(void *enc, opus_int32 *complexity) {
//   return opus_encoder_ctl((OpusEncoder *)enc, OPUS_GET_COMPLEXITY(complexity));
// }
import "C"

import (
	"fmt"
	"reflect"
	"strings"
	"unsafe"

	mdcodec "github.com/pion/mediadevices/pkg/codec"
)

// setOpusComplexity sets libopus's complexity (0..10) on the encoder rc
// mediadevices built, which has no option for it.
//
// mediadevices keeps the libopus encoder (a C allocation, valid until
// Close) in the unexported field engine of its *encoder; it is read by
// reflection, checked by name and type as setVP8Controls does, so a
// mediadevices upgrade that moves it makes this an error at
// NewOpusEncoder (and a failing test), not a crash. The complexity lives in
// the libopus state, so setting it once is enough.
func setOpusComplexity(rc mdcodec.ReadCloser, complexity int) error {
	if complexity < 0 || complexity > 10 {
		return fmt.Errorf("opus: complexity %d out of 0..10", complexity)
	}
	enc, err := opusEngine(rc)
	if err != nil {
		return err
	}
	if rc := C.avf_opus_complexity(enc, C.int(complexity)); rc != C.OPUS_OK {
		return fmt.Errorf("opus: set complexity %d: %s", complexity, C.GoString(C.opus_strerror(rc)))
	}
	return nil
}

// opusComplexity reads the complexity libopus runs rc at.
func opusComplexity(rc mdcodec.ReadCloser) (int, error) {
	enc, err := opusEngine(rc)
	if err != nil {
		return 0, err
	}
	var c C.opus_int32
	if rc := C.avf_opus_get_complexity(enc, &c); rc != C.OPUS_OK {
		return 0, fmt.Errorf("opus: get complexity: %s", C.GoString(C.opus_strerror(rc)))
	}
	return int(c), nil
}

// opusEngine is the libopus encoder inside mediadevices' encoder rc.
func opusEngine(rc mdcodec.ReadCloser) (unsafe.Pointer, error) {
	v := reflect.ValueOf(rc)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("opus: mediadevices encoder is a %T, not a pointer to a struct", rc)
	}
	f := v.Elem().FieldByName("engine")
	if !f.IsValid() || f.Kind() != reflect.Pointer || !strings.Contains(f.Type().Elem().Name(), "OpusEncoder") || f.IsNil() {
		return nil, fmt.Errorf("opus: mediadevices encoder %T has no libopus encoder field", rc)
	}
	return unsafe.Pointer(f.Pointer()), nil
}
