module github.com/snapvol/snapvol/test/bench

go 1.26.8

require (
	github.com/docker/go-plugins-helpers v0.0.0-20240701071450-45e2431495c8
	github.com/opencontainers/go-digest v1.0.0
	github.com/opencontainers/image-spec v1.1.1
	github.com/snapvol/snapvol v0.0.0
	golang.org/x/image v0.47.0
	golang.org/x/sys v0.49.0
	oras.land/oras-go/v2 v2.6.0
)

require (
	github.com/Microsoft/go-winio v0.6.4 // indirect
	github.com/coreos/go-systemd v0.0.0-20191104093116-d3cd4ed1dbcf // indirect
	github.com/docker/go-connections v0.8.2 // indirect
	golang.org/x/sync v0.24.0 // indirect
)

// The repository's own module, as checked out: the benchmark runs its
// plugin and command and uses its test harness (test, test/dockerd). It is
// a module of its own so that golang.org/x/image (the plot's font) stays
// out of the main go.mod; the main module's TestBenchModule
// (test/modules_test.go) vets it and runs its root-free tests, so
// `go test ./...` from the repository root still runs them. A dependency
// the main go.mod adds or upgrades must be recorded here too: go mod tidy
// in this directory.
replace github.com/snapvol/snapvol => ../..
