package cli

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// parseLabels turns "key=value" flags into a map; nil for none. Keys must
// be non-empty and unique; values may be empty or hold "=".
func parseLabels(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	labels := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", p)
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("key %q given twice", k)
		}
		labels[k] = v
	}
	return labels, nil
}

// wholeSeconds converts a positive duration of whole seconds to seconds.
func wholeSeconds(d time.Duration) (int, error) {
	if d <= 0 {
		return 0, fmt.Errorf("must be positive, got %s", d)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("must be whole seconds, got %s", d)
	}
	secs := d / time.Second
	if secs > math.MaxInt32 {
		return 0, fmt.Errorf("%s is too long", d)
	}
	return int(secs), nil
}
