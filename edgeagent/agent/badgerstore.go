package agent

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Keys of the Badger StateStore.
var (
	keyEnrolled    = []byte("enrolled")
	keyTask        = []byte("task")
	prefixPending  = []byte("pending/")
	prefixDone     = []byte("done/")
	errKeyNotFound = badger.ErrKeyNotFound
)

// BadgerStore is the StateStore of a real device: Badger with the
// low-memory options of coordinator/store (SyncWrites on, small tables, no
// caches), so every write has reached the disk when a method returns.
type BadgerStore struct {
	db *badger.DB
}

// OpenBadgerStore opens (creating) the store in dir.
func OpenBadgerStore(dir string) (*BadgerStore, error) {
	db, err := badger.Open(store.LowMemoryBadgerOptions(dir))
	if err != nil {
		return nil, fmt.Errorf("open agent state %s: %w", dir, err)
	}
	return &BadgerStore{db: db}, nil
}

func roundKey(prefix []byte, round uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), round)
}

func (s *BadgerStore) get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, errKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return out, nil
}

func (s *BadgerStore) update(what string, fn func(txn *badger.Txn) error) error {
	if err := s.db.Update(fn); err != nil {
		return fmt.Errorf("agent state %s: %w", what, err)
	}
	return nil
}

// Enrolled implements StateStore.
func (s *BadgerStore) Enrolled() (bool, error) {
	v, err := s.get(keyEnrolled)
	return v != nil, err
}

// SetEnrolled implements StateStore.
func (s *BadgerStore) SetEnrolled() error {
	return s.update("set enrolled", func(txn *badger.Txn) error { return txn.Set(keyEnrolled, []byte{1}) })
}

// Task implements StateStore.
func (s *BadgerStore) Task() (*fedgepb.RoundTask, error) {
	v, err := s.get(keyTask)
	if err != nil || v == nil {
		return nil, err
	}
	return decodeTask(v)
}

// PutTask implements StateStore.
func (s *BadgerStore) PutTask(t *fedgepb.RoundTask) error {
	b, err := proto.Marshal(t)
	if err != nil {
		return fmt.Errorf("store task: %w", err)
	}
	return s.update("put task", func(txn *badger.Txn) error { return txn.Set(keyTask, b) })
}

// deleteTask deletes the stored task if it is for round (or unreadable).
func deleteTask(txn *badger.Txn, round uint64) error {
	it, err := txn.Get(keyTask)
	if errors.Is(err, errKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	v, err := it.ValueCopy(nil)
	if err != nil {
		return err
	}
	if t, err := decodeTask(v); err == nil && t.RoundId != round {
		return nil
	}
	return txn.Delete(keyTask)
}

// FinishTask implements StateStore.
func (s *BadgerStore) FinishTask(p Pending) error {
	return s.update("finish task", func(txn *badger.Txn) error {
		if err := txn.Set(roundKey(prefixPending, p.RoundID), encodePending(p)); err != nil {
			return err
		}
		return deleteTask(txn, p.RoundID)
	})
}

// markDone records round as done and forgets the oldest beyond
// MaxDoneRounds.
func markDone(txn *badger.Txn, round uint64) error {
	if err := txn.Set(roundKey(prefixDone, round), nil); err != nil {
		return err
	}
	var keys [][]byte
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = prefixDone
	it := txn.NewIterator(opts)
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for len(keys) > MaxDoneRounds {
		if err := txn.Delete(keys[0]); err != nil {
			return err
		}
		keys = keys[1:]
	}
	return nil
}

// DropTask implements StateStore.
func (s *BadgerStore) DropTask(round uint64) error {
	return s.update("drop task", func(txn *badger.Txn) error {
		if err := deleteTask(txn, round); err != nil {
			return err
		}
		return markDone(txn, round)
	})
}

// Acked implements StateStore.
func (s *BadgerStore) Acked(round uint64) error {
	return s.update("ack", func(txn *badger.Txn) error {
		if err := txn.Delete(roundKey(prefixPending, round)); err != nil {
			return err
		}
		return markDone(txn, round)
	})
}

// Pending implements StateStore.
func (s *BadgerStore) Pending() ([]Pending, error) {
	var out []Pending
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixPending
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			p, err := decodePending(v)
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read pending: %w", err)
	}
	return out, nil
}

// Done implements StateStore.
func (s *BadgerStore) Done() ([]uint64, error) {
	var out []uint64
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = prefixDone
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefixDone)+8 {
				return fmt.Errorf("%w: done key %q", ErrCorrupt, k)
			}
			out = append(out, binary.BigEndian.Uint64(k[len(prefixDone):]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read done rounds: %w", err)
	}
	return out, nil
}

// Close implements StateStore.
func (s *BadgerStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close agent state: %w", err)
	}
	return nil
}
