package opusdec

import "testing"

func TestErrors(t *testing.T) {
	if _, err := New(48000, 3); err == nil {
		t.Error("3 channels accepted")
	}
	if _, err := New(44100, 1); err == nil {
		t.Error("44.1 kHz accepted")
	}
	d, err := New(48000, 1)
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, 960)
	if _, err := d.Decode([]byte{0xff, 0xff, 0xff}, pcm); err == nil {
		t.Error("garbage packet decoded")
	}
	if n, err := d.Decode(nil, pcm); err != nil || n != 960 {
		t.Errorf("concealment: %d, %v", n, err)
	}
	if _, err := d.Decode(nil, nil); err == nil {
		t.Error("empty output accepted")
	}
	d.Close()
	d.Close()
	if _, err := d.Decode(nil, pcm); err == nil {
		t.Error("decode after close")
	}
}
