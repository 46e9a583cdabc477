package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"
)

// kv is the ordered key-value engine under a Store: Badger or memory. The
// record logic (kvStore) is shared, so the two stores differ only in how
// bytes are kept.
type kv interface {
	view(fn func(tx kvTx) error) error
	// update runs fn in a read-write transaction committed durably if fn
	// returns nil and discarded otherwise.
	update(fn func(tx kvTx) error) error
	close() error
}

type kvTx interface {
	// get returns the value or errKeyMissing.
	get(key []byte) ([]byte, error)
	set(key, val []byte) error
	del(key []byte) error
	// scan calls fn for keys with prefix in ascending order from start (nil:
	// the first), or in descending order from the last if reverse, until fn
	// returns false or an error. key and val are valid only during the call.
	scan(prefix, start []byte, reverse bool, fn func(key, val []byte) (bool, error)) error
}

var errKeyMissing = errors.New("key missing")

// kvStore implements Store on a kv engine.
type kvStore struct {
	db     kv
	mu     sync.RWMutex // guards closed
	closed bool
}

func (s *kvStore) enter(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	return s.mu.RUnlock, nil
}

func (s *kvStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

func (s *kvStore) Apply(ctx context.Context, b *Batch) error {
	if err := b.Validate(); err != nil {
		return fmt.Errorf("apply batch: %w", err)
	}
	leave, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	err = s.db.update(func(tx kvTx) error { return applyBatch(tx, b) })
	if err != nil {
		return fmt.Errorf("apply batch: %w", err)
	}
	return nil
}

func applyBatch(tx kvTx, b *Batch) error {
	for _, round := range b.DeleteUpdates {
		var keys [][]byte
		err := tx.scan(idKey(prefixUpdate, round), nil, false, func(k, _ []byte) (bool, error) {
			keys = append(keys, bytes.Clone(k))
			return true, nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := tx.del(k); err != nil {
				return err
			}
		}
	}
	for _, h := range b.DeleteTokens {
		if err := tx.del(bytesKey(prefixToken, h)); err != nil {
			return err
		}
	}
	put := func(key []byte, m proto.Message) error {
		v, err := encodeRecord(m)
		if err != nil {
			return err
		}
		return tx.set(key, v)
	}
	for _, r := range b.Runs {
		if err := put(idKey(prefixRun, r.RunId), r); err != nil {
			return err
		}
	}
	for _, r := range b.Rounds {
		if err := put(idKey(prefixRound, r.RoundId), r); err != nil {
			return err
		}
	}
	for _, r := range b.Updates {
		if err := put(updateKey(r.RoundId, r.DeviceId), r); err != nil {
			return err
		}
	}
	for _, r := range b.ModelVersions {
		if err := put(idKey(prefixVersion, r.Version), r); err != nil {
			return err
		}
	}
	for _, r := range b.Devices {
		if err := put(strKey(prefixDevice, r.DeviceId), r); err != nil {
			return err
		}
	}
	for _, r := range b.Metrics {
		if err := put(idKey(prefixMetrics, r.RoundId), r); err != nil {
			return err
		}
	}
	for _, r := range b.Tokens {
		if err := put(bytesKey(prefixToken, r.TokenHash), r); err != nil {
			return err
		}
	}
	for _, r := range b.Optimizers {
		if err := put(idKey(prefixOptim, r.RunId), r); err != nil {
			return err
		}
	}
	if len(b.Audit) > 0 {
		seq, err := readCounter(tx, []byte(keyAuditSeq))
		if err != nil {
			return err
		}
		for _, r := range b.Audit {
			seq++
			e := proto.Clone(r).(*AuditEntry)
			e.Seq = seq
			if err := put(idKey(prefixAudit, seq), e); err != nil {
				return err
			}
		}
		if err := tx.set([]byte(keyAuditSeq), encodeCounter(seq)); err != nil {
			return err
		}
	}
	return nil
}

func readCounter(tx kvTx, key []byte) (uint64, error) {
	v, err := tx.get(key)
	if errors.Is(err, errKeyMissing) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return decodeCounter(v)
}

func (s *kvStore) NextSequence(ctx context.Context, name string) (uint64, error) {
	if name == "" {
		return 0, fmt.Errorf("next sequence: %w: empty name", ErrInvalid)
	}
	leave, err := s.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer leave()
	var n uint64
	err = s.db.update(func(tx kvTx) error {
		key := strKey(prefixSequence, name)
		v, err := readCounter(tx, key)
		if err != nil {
			return err
		}
		n = v + 1
		return tx.set(key, encodeCounter(n))
	})
	if err != nil {
		return 0, fmt.Errorf("next sequence %q: %w", name, err)
	}
	return n, nil
}

// getOne reads and decodes one record.
func getOne[T any](s *kvStore, ctx context.Context, what string, key []byte, dec func([]byte) (T, error)) (T, error) {
	var out T
	leave, err := s.enter(ctx)
	if err != nil {
		return out, err
	}
	defer leave()
	err = s.db.view(func(tx kvTx) error {
		v, err := tx.get(key)
		if errors.Is(err, errKeyMissing) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		out, err = dec(v)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("read %s: %w", what, err)
	}
	return out, nil
}

// list decodes the records under prefix from start (nil: all), keeping
// those keep accepts (nil keeps all), at most limit (0 = no limit).
func list[T any](s *kvStore, ctx context.Context, what string, prefix, start []byte, dec func([]byte) (T, error), keep func(T) bool, limit int) ([]T, error) {
	leave, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	var out []T
	err = s.db.view(func(tx kvTx) error {
		return tx.scan(prefix, start, false, func(k, v []byte) (bool, error) {
			r, err := dec(v)
			if err != nil {
				return false, fmt.Errorf("key %q: %w", k, err)
			}
			if keep == nil || keep(r) {
				out = append(out, r)
			}
			return limit <= 0 || len(out) < limit, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	return out, nil
}

// lastID returns the id of the last key under an id prefix, 0 if none.
func (s *kvStore) lastID(ctx context.Context, what, prefix string) (uint64, error) {
	leave, err := s.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer leave()
	var id uint64
	err = s.db.view(func(tx kvTx) error {
		return tx.scan([]byte(prefix), nil, true, func(k, _ []byte) (bool, error) {
			if len(k) != len(prefix)+8 {
				return false, fmt.Errorf("%w: key %q", ErrCorrupt, k)
			}
			id = decodeID(k[len(prefix):])
			return false, nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("latest %s: %w", what, err)
	}
	return id, nil
}
