//go:build race

package test

// raceBuild: the tests run with -race, so the snapvol binary they start is
// race-built too (the crash and chaos figures are quoted "with -race").
const raceBuild = true
