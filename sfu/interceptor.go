package sfu

import (
	"strings"
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// viewerInterceptor is the last (outermost) interceptor of a viewer: it
// counts what is sent to the viewer and holds its video back until the
// first keyframe that really goes out, so a viewer's decoder starts on a
// picture it can decode. (Pion binds an answerer's tracks when the answer is
// set, before DTLS; packets written before SRTP is ready are dropped, so a
// keyframe sent then would be lost.)
// Packets reach it by reference: nothing is copied.
type viewerInterceptor struct {
	interceptor.NoOp
	v *viewer
}

// viewerInterceptorFactory hands one viewer's interceptor to its
// PeerConnection's registry.
type viewerInterceptorFactory struct{ v *viewer }

func (f viewerInterceptorFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &viewerInterceptor{v: f.v}, nil
}

// BindLocalStream wraps the writer of each of the viewer's streams.
func (i *viewerInterceptor) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	v := i.v
	if !strings.EqualFold(info.MimeType, webrtc.MimeTypeVP8) {
		return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
			v.sent(h, payload)
			return w.Write(h, payload, a)
		})
	}
	var open atomic.Bool
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if open.Load() {
			v.sent(h, payload)
			return w.Write(h, payload, a)
		}
		if !vp8KeyframeStart(payload) {
			return 0, nil
		}
		// Open only once a keyframe start really left: before SRTP is
		// ready Pion's writer drops packets and reports 0 bytes.
		n, err := w.Write(h, payload, a)
		if n > 0 {
			open.Store(true)
			v.sent(h, payload)
		}
		return n, err
	})
}
