package test

import (
	"os"
	"testing"
)

// TestMain lets the test binary be the other client (see otherclient.go).
func TestMain(m *testing.M) {
	if spec := os.Getenv(clientEnv); spec != "" {
		os.Exit(runClient(spec))
	}
	os.Exit(m.Run())
}
