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
// first keyframe, so a viewer's decoder starts on a picture it can decode.
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
	// The video binding exists from now on: the next keyframe reaches
	// this viewer, so ask for one.
	defer v.room.keyframes.request()
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if !open.Load() {
			if !vp8KeyframeStart(payload) {
				return 0, nil
			}
			open.Store(true)
		}
		v.sent(h, payload)
		return w.Write(h, payload, a)
	})
}
