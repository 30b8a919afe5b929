package keylock

import (
	"sync"
	"testing"
)

func TestLockExcludesPerKeyAndForgetsUnusedKeys(t *testing.T) {
	var m Map
	var wg sync.WaitGroup
	a, b, c := 0, 0, 0
	counts := map[string]*int{"a": &a, "b": &b, "c": &c} // only read concurrently
	for i := 0; i < 64; i++ {
		key := []string{"a", "b", "c"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				unlock := m.Lock(key)
				*counts[key]++ // a data race under -race if keys do not exclude
				unlock()
			}
		}()
	}
	wg.Wait()
	if a+b+c != 6400 {
		t.Fatalf("lost increments: a=%d b=%d c=%d", a, b, c)
	}
	if n := m.Len(); n != 0 {
		t.Fatalf("%d keys kept after every lock was released", n)
	}
}

func TestDifferentKeysDoNotBlockEachOther(t *testing.T) {
	var m Map
	unlockA := m.Lock("a")
	done := make(chan struct{})
	go func() { m.Lock("b")(); close(done) }()
	<-done // would hang if "b" waited for "a"
	if n := m.Len(); n != 1 {
		t.Fatalf("Len = %d with only a held, want 1", n)
	}
	unlockA()
}
