package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
)

// BadgerOptions are the coordinator's Badger settings for dir: SyncWrites on
// (an acknowledged Apply survives a power cut), values above 64 KiB (update
// deltas, model weights) kept in the value log so compactions do not
// rewrite them, 256 MiB value log files, two compactors, Badger's default
// sizes otherwise, and no logging (Open installs a zap logger).
func BadgerOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(nil).
		WithValueLogFileSize(256 << 20).
		WithValueThreshold(64 << 10).
		WithNumCompactors(2)
}

// LowMemoryBadgerOptions are settings for small devices (edge agents):
// SyncWrites on, two 1 MiB memtables, no block or index cache, no
// compression, values above 1 KiB in 16 MiB value log files, small tables.
// Measured by TestLowMemoryFootprint (2,000 values of 4 KiB written and read
// back): about 18 MiB of peak RSS above the process's own, against about
// 70 MiB with BadgerOptions. Much of it is mapped value log pages, which
// the kernel can reclaim.
func LowMemoryBadgerOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(nil).
		WithMemTableSize(1 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(512 << 10).
		WithBaseLevelSize(2 << 20).
		WithBlockCacheSize(0).
		WithCompression(options.None).
		WithIndexCacheSize(0).
		WithValueLogFileSize(16 << 20).
		WithValueThreshold(1 << 10).
		WithNumCompactors(2).
		WithNumGoroutines(1).
		WithMetricsEnabled(false)
}

// Badger is a Store on a Badger database.
type Badger struct {
	kvStore
	db *badger.DB
}

// Open opens (creating if needed) the Badger store described by opts, e.g.
// BadgerOptions(dir). Badger's own log goes to logger (nil: discarded). A
// directory held by another process fails with ErrLocked.
func Open(opts badger.Options, logger *zap.Logger) (_ *Badger, err error) {
	defer func() {
		// Badger panics on inconsistent options.
		if r := recover(); r != nil {
			err = fmt.Errorf("open store %s: %w: %v", opts.Dir, ErrInvalid, r)
		}
	}()
	if logger != nil {
		opts = opts.WithLogger(zapLogger{logger.Sugar().With(zap.String("component", "badger"))})
	}
	db, err := badger.Open(opts)
	if err != nil {
		// Badger flattens the flock error into text.
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open store %s: %w: %v", opts.Dir, ErrLocked, err)
		}
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	s := &Badger{db: db}
	s.kvStore.db = badgerKV{db}
	return s, nil
}

// RunValueLogGC rewrites value log files of which at least discardRatio is
// garbage, one file per call, and reports whether it rewrote one. Calling it
// on a timer is the caller's job (e.g. every few minutes with 0.5).
func (s *Badger) RunValueLogGC(discardRatio float64) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, ErrClosed
	}
	err := s.db.RunValueLogGC(discardRatio)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
		return false, nil
	}
	return false, fmt.Errorf("value log gc: %w", err)
}

type badgerKV struct{ db *badger.DB }

func (k badgerKV) view(fn func(tx kvTx) error) error {
	return k.db.View(func(txn *badger.Txn) error { return fn(badgerTx{txn}) })
}

// update retries on a conflict with a concurrent transaction: every write
// transaction here is a pure function of what it reads.
func (k badgerKV) update(fn func(tx kvTx) error) error {
	for {
		err := k.db.Update(func(txn *badger.Txn) error { return fn(badgerTx{txn}) })
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
}

func (k badgerKV) close() error { return k.db.Close() }

type badgerTx struct{ txn *badger.Txn }

func (t badgerTx) get(key []byte) ([]byte, error) {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, errKeyMissing
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t badgerTx) set(key, val []byte) error { return t.txn.Set(key, val) }

func (t badgerTx) del(key []byte) error { return t.txn.Delete(key) }

func (t badgerTx) scan(prefix, start []byte, reverse bool, fn func(key, val []byte) (bool, error)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.Reverse = reverse
	it := t.txn.NewIterator(opts)
	defer it.Close()
	seek := prefix
	if bytes.Compare(start, prefix) > 0 {
		seek = start
	}
	if reverse {
		// Seek to the last key with the prefix: prefix followed by 0xff...
		seek = append(append([]byte(nil), prefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	}
	for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var more bool
		err := item.Value(func(v []byte) error {
			var err error
			more, err = fn(item.Key(), v)
			return err
		})
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// zapLogger adapts zap to badger.Logger.
type zapLogger struct{ s *zap.SugaredLogger }

func (l zapLogger) Errorf(f string, a ...interface{})   { l.s.Errorf(strings.TrimSpace(f), a...) }
func (l zapLogger) Warningf(f string, a ...interface{}) { l.s.Warnf(strings.TrimSpace(f), a...) }
func (l zapLogger) Infof(f string, a ...interface{})    { l.s.Infof(strings.TrimSpace(f), a...) }
func (l zapLogger) Debugf(f string, a ...interface{})   { l.s.Debugf(strings.TrimSpace(f), a...) }
