package mediaruntime

import "testing"

func TestParseMemoryLimit(t *testing.T) {
	phys, err := machineMemory()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"auto", int64(phys / 100 * AutoMemoryPercent), false},
		{"", int64(phys / 100 * AutoMemoryPercent), false},
		{"off", 0, false},
		{"0", 0, false},
		{"4GiB", 4 << 30, false},
		{"512MB", 512_000_000, false},
		{"1073741824", 1 << 30, false},
		{"1 GiB", 1 << 30, false},
		{"1MiB", 0, true}, // below 64 MiB
		{"lots", 0, true},
		{"-5GiB", 0, true},
	} {
		got, err := ParseMemoryLimit(c.in)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d, error %v", c.in, got, err, c.want, c.wantErr)
		}
	}
	if phys < 64<<20 {
		t.Errorf("machine memory %d bytes", phys)
	}
}
