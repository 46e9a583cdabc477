package store

import (
	"context"
	"errors"
	"testing"
)

// TestCorruptRecord: bytes on disk that do not decode are reported as
// ErrCorrupt, naming what was read, by single reads and listings alike.
func TestCorruptRecord(t *testing.T) {
	stores := map[string]func(t *testing.T) (*kvStore, func()){
		"memory": func(t *testing.T) (*kvStore, func()) {
			s := NewMemory().(*kvStore)
			return s, func() { _ = s.Close() }
		},
		"badger": func(t *testing.T) (*kvStore, func()) {
			b, err := Open(BadgerOptions(t.TempDir()), nil)
			if err != nil {
				t.Fatal(err)
			}
			return &b.kvStore, func() { _ = b.Close() }
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			s, done := open(t)
			defer done()
			err := s.db.update(func(tx kvTx) error {
				if err := tx.set(idKey(prefixRound, 7), []byte{formatVersion, 0xff}); err != nil {
					return err
				}
				return tx.set([]byte(keyAuditSeq), []byte{1, 2, 3})
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := s.Round(ctx, 7); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Round of a corrupt record: %v", err)
			}
			if _, err := s.Rounds(ctx, 0); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Rounds over a corrupt record: %v", err)
			}
			err = s.Apply(ctx, &Batch{Audit: []*AuditEntry{{Actor: "a", Action: "b"}}})
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Apply over a corrupt audit counter: %v", err)
			}
		})
	}
}
