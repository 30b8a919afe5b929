package osdserver

import (
	"os"
	"testing"

	"github.com/snapvol/snapvol/test/leakcheck"
)

// TestMain fails the run, naming the test, if a server's pool, its loop
// device or a mount it made is left after the tests (see ForTest).
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }
