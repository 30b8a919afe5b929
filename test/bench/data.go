package bench

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Data set: incompressible bytes (ChaCha8) in many files whose sizes are
// log-uniform between MinFile and MaxFile, 256 files per directory, like
// a database's data directory rather than one big blob. Copying cost grows
// with both bytes and files; a snapshot's should grow with neither.
const (
	MinFile = 4 << 10
	MaxFile = 1 << 20
	perDir  = 256
)

// ProbeFile is the first file of every data set; the benchmark checks that
// a clone shows it with the source's size.
const ProbeFile = "d000/f00000.dat"

// Fill writes total bytes of data under dir and returns the file count and
// the size of ProbeFile. The same seed gives the same tree.
func Fill(dir string, total int64, seed uint64) (files int, probe int64, err error) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	content := rand.NewChaCha8(key)
	sizes := rand.New(rand.NewPCG(seed, 0x5eed))
	buf := make([]byte, MaxFile)
	lo, hi := math.Log(MinFile), math.Log(MaxFile)
	for written := int64(0); written < total; files++ {
		size := int64(math.Exp(lo + sizes.Float64()*(hi-lo)))
		size = min(size, total-written)
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", files/perDir))
		if files%perDir == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return files, 0, err
			}
		}
		_, _ = content.Read(buf[:size])
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d.dat", files)), buf[:size], 0o644); err != nil {
			return files, 0, err
		}
		if files == 0 {
			probe = size
		}
		written += size
	}
	return files, probe, nil
}

// ParseSize reads 8M, 1G, 4G, 512K or a byte count.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	for suffix, m := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M or G suffix", s)
	}
	return n * mult, nil
}

// SizeLabel is 8 MiB, 1 GiB, ...
func SizeLabel(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
