package replacement_test

import (
	"os"
	"testing"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// TestMain reports what hangs shortly before -test.timeout.
func TestMain(m *testing.M) { os.Exit(repotest.WatchHangs(m).Run()) }
