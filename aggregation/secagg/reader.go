package secagg

import (
	"encoding/binary"
	"fmt"
)

// reader decodes with sticky errors: after the first failure every read
// returns zero values and done reports the failure.
type reader struct {
	b   []byte
	err error
}

func newReader(b []byte, want MsgType) (*reader, uint64) {
	r := &reader{b: b}
	t, round, err := PeekType(b)
	if err != nil {
		r.err = err
		return r, 0
	}
	if t != want {
		r.fail(fmt.Errorf("type %d, want %d", t, want))
		return r, 0
	}
	r.b = b[headerLen:]
	return r, round
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	r.b = nil
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return make([]byte, n)
	}
	if n < 0 || len(r.b) < n {
		r.fail(fmt.Errorf("truncated: need %d bytes, have %d", n, len(r.b)))
		return make([]byte, max(n, 0))
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u32() uint32 { return binary.LittleEndian.Uint32(r.bytes(4)) }

func (r *reader) kind() ShareKind {
	k := ShareKind(r.bytes(1)[0])
	if r.err == nil && k != KindSeed && k != KindKey {
		r.fail(fmt.Errorf("share kind %d", k))
	}
	return k
}

// count reads an element count and checks that the rest of the message can
// hold that many elements of elemLen bytes, before anything is allocated.
func (r *reader) count(elemLen int) int { return r.countMax(elemLen, MaxClients) }

func (r *reader) countMax(elemLen, limit int) int {
	n := int(r.u32())
	if r.err != nil {
		return 0
	}
	if n > limit || n*elemLen > len(r.b) {
		r.fail(fmt.Errorf("count %d of %d-byte elements with %d bytes left", n, elemLen, len(r.b)))
		return 0
	}
	return n
}

func finish[T any](m *T, r *reader) (*T, error) {
	if err := r.done(); err != nil {
		return nil, err
	}
	return m, nil
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
	}
	return r.err
}
