package chart

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind (the Helm
// SDK's and client-go's clients included).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
