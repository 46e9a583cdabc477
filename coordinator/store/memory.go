package store

import (
	"bytes"
	"slices"
	"strings"
	"sync"
)

// NewMemory returns an empty Store kept in memory: the twin of the Badger
// store for tests and simulations. It stores the same encoded bytes, so it
// validates, copies and orders records exactly like the Badger store.
func NewMemory() Store {
	return &kvStore{db: &memKV{m: make(map[string][]byte)}}
}

type memKV struct {
	mu sync.RWMutex
	m  map[string][]byte
}

func (k *memKV) view(fn func(tx kvTx) error) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return fn(&memTx{kv: k})
}

func (k *memKV) update(fn func(tx kvTx) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	tx := &memTx{kv: k, writable: true, undo: make(map[string][]byte)}
	if err := fn(tx); err != nil {
		for key, old := range tx.undo {
			if old == nil {
				delete(k.m, key)
			} else {
				k.m[key] = old
			}
		}
		return err
	}
	return nil
}

func (k *memKV) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m = nil
	return nil
}

type memTx struct {
	kv       *memKV
	writable bool
	// undo holds the value before the transaction's first write of a key
	// (nil: the key did not exist).
	undo map[string][]byte
}

func (t *memTx) get(key []byte) ([]byte, error) {
	v, ok := t.kv.m[string(key)]
	if !ok {
		return nil, errKeyMissing
	}
	return v, nil
}

func (t *memTx) remember(key string) {
	if _, seen := t.undo[key]; seen {
		return
	}
	t.undo[key] = t.kv.m[key]
}

func (t *memTx) set(key, val []byte) error {
	if !t.writable {
		panic("store: write in a read-only memory transaction")
	}
	t.remember(string(key))
	t.kv.m[string(key)] = bytes.Clone(val)
	return nil
}

func (t *memTx) del(key []byte) error {
	if !t.writable {
		panic("store: write in a read-only memory transaction")
	}
	t.remember(string(key))
	delete(t.kv.m, string(key))
	return nil
}

func (t *memTx) scan(prefix, start []byte, reverse bool, fn func(key, val []byte) (bool, error)) error {
	var keys []string
	for k := range t.kv.m {
		if strings.HasPrefix(k, string(prefix)) && (reverse || k >= string(start)) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if reverse {
		slices.Reverse(keys)
	}
	for _, k := range keys {
		more, err := fn([]byte(k), t.kv.m[k])
		if err != nil || !more {
			return err
		}
	}
	return nil
}
