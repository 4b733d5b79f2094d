package images_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (the
// builder's layer writers, a process waiter).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
