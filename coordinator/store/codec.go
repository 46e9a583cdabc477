package store

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"
)

// formatVersion is the first byte of every stored value; the rest is the
// record's protobuf encoding.
const formatVersion = 1

// MaxRecordBytes bounds a stored value (a model version with its weights is
// the largest record).
const MaxRecordBytes = 256 << 20

// Key prefixes. Numeric ids are big-endian so keys sort by id.
const (
	prefixRun      = "r/"
	prefixRound    = "o/"
	prefixUpdate   = "u/"
	prefixVersion  = "v/"
	prefixDevice   = "d/"
	prefixMetrics  = "m/"
	prefixAudit    = "a/"
	prefixToken    = "t/"
	prefixSequence = "s/"
	prefixOptim    = "p/"
	keyAuditSeq    = "q/audit"
)

func idKey(prefix string, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefix), id)
}

func updateKey(round uint64, device string) []byte {
	return append(idKey(prefixUpdate, round), device...)
}

func strKey(prefix, s string) []byte { return append([]byte(prefix), s...) }

func bytesKey(prefix string, b []byte) []byte { return append([]byte(prefix), b...) }

// encodeRecord returns the stored form of a record.
func encodeRecord(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	if len(b)+1 > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %T of %d bytes exceeds %d", ErrInvalid, m, len(b)+1, MaxRecordBytes)
	}
	return append([]byte{formatVersion}, b...), nil
}

// decodeRecord parses a stored value into m and checks it with validate.
// Every failure wraps ErrCorrupt.
func decodeRecord[T proto.Message](b []byte, m T, validate func(T) error) error {
	switch {
	case len(b) == 0:
		return fmt.Errorf("%w: empty value", ErrCorrupt)
	case len(b) > MaxRecordBytes:
		return fmt.Errorf("%w: value of %d bytes exceeds %d", ErrCorrupt, len(b), MaxRecordBytes)
	case b[0] != formatVersion:
		return fmt.Errorf("%w: format version %d, want %d", ErrCorrupt, b[0], formatVersion)
	}
	if err := proto.Unmarshal(b[1:], m); err != nil {
		return fmt.Errorf("%w: %T: %v", ErrCorrupt, m, err)
	}
	if err := validate(m); err != nil {
		return fmt.Errorf("%w: %T: %v", ErrCorrupt, m, err)
	}
	return nil
}

func decodeRun(b []byte) (*Run, error) {
	r := new(Run)
	return r, decodeRecord(b, r, validateRun)
}

func decodeRound(b []byte) (*Round, error) {
	r := new(Round)
	return r, decodeRecord(b, r, validateRound)
}

func decodeUpdate(b []byte) (*Update, error) {
	r := new(Update)
	return r, decodeRecord(b, r, validateUpdate)
}

func decodeModelVersion(b []byte) (*ModelVersion, error) {
	r := new(ModelVersion)
	return r, decodeRecord(b, r, validateModelVersion)
}

func decodeDevice(b []byte) (*Device, error) {
	r := new(Device)
	return r, decodeRecord(b, r, validateDevice)
}

func decodeMetrics(b []byte) (*Metrics, error) {
	r := new(Metrics)
	return r, decodeRecord(b, r, validateMetrics)
}

func decodeAudit(b []byte) (*AuditEntry, error) {
	r := new(AuditEntry)
	return r, decodeRecord(b, r, validateAudit)
}

func decodeToken(b []byte) (*Token, error) {
	r := new(Token)
	return r, decodeRecord(b, r, validateToken)
}

func decodeOptimizer(b []byte) (*Optimizer, error) {
	r := new(Optimizer)
	return r, decodeRecord(b, r, validateOptimizer)
}

// decodeCounter parses a stored sequence value: 8 big-endian bytes.
func decodeCounter(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: counter of %d bytes, want 8", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

func encodeCounter(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
