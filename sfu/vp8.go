package sfu

// vp8KeyframeStart reports whether an RTP payload of VP8 (RFC 7741) is the
// first packet of a keyframe: the payload descriptor's S bit set with
// partition index 0, and the P (inverse keyframe) bit of the VP8 payload
// header clear.
func vp8KeyframeStart(payload []byte) bool {
	if len(payload) < 1 {
		return false
	}
	d := payload[0]
	if d&0x10 == 0 || d&0x07 != 0 { // S=0 or PID≠0
		return false
	}
	i := 1
	if d&0x80 != 0 { // X: extension byte follows
		if len(payload) < 2 {
			return false
		}
		x := payload[1]
		i = 2
		if x&0x80 != 0 { // I: picture ID, 7 or 15 bits
			if len(payload) <= i {
				return false
			}
			if payload[i]&0x80 != 0 {
				i += 2
			} else {
				i++
			}
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if x&0x30 != 0 { // T or K: TID/Y/KEYIDX
			i++
		}
	}
	if len(payload) <= i {
		return false
	}
	return payload[i]&0x01 == 0
}
