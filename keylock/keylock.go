// Package keylock holds one mutex per key (a volume, a source), made on
// first use and forgotten when nobody holds or waits for it, so a plugin
// that has seen 10,000 names does not keep 10,000 idle mutexes.
package keylock

import "sync"

// Map is a set of mutexes by key. The zero value is ready to use.
type Map struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	sync.Mutex
	users int // holders and waiters
}

// Lock locks key's mutex and returns the func that unlocks it.
func (m *Map) Lock(key string) (unlock func()) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]*entry{}
	}
	e, ok := m.locks[key]
	if !ok {
		e = &entry{}
		m.locks[key] = e
	}
	e.users++
	m.mu.Unlock()
	e.Lock()
	return func() {
		e.Unlock()
		m.mu.Lock()
		e.users--
		if e.users == 0 {
			delete(m.locks, key)
		}
		m.mu.Unlock()
	}
}

// Len is how many keys are held or waited for.
func (m *Map) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.locks)
}
