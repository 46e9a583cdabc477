package store

import (
	"crypto/sha256"
	"testing"

	"google.golang.org/protobuf/proto"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// decoders maps a record kind byte (the first fuzz byte) to its decoder.
var decoders = []func([]byte) (proto.Message, error){
	func(b []byte) (proto.Message, error) { return decodeRun(b) },
	func(b []byte) (proto.Message, error) { return decodeRound(b) },
	func(b []byte) (proto.Message, error) { return decodeUpdate(b) },
	func(b []byte) (proto.Message, error) { return decodeModelVersion(b) },
	func(b []byte) (proto.Message, error) { return decodeDevice(b) },
	func(b []byte) (proto.Message, error) { return decodeMetrics(b) },
	func(b []byte) (proto.Message, error) { return decodeAudit(b) },
	func(b []byte) (proto.Message, error) { return decodeToken(b) },
	func(b []byte) (proto.Message, error) { return decodeOptimizer(b) },
}

// recordTable is the table of good and bad stored values shared by the
// decoder test and the fuzz seeds: kind, bytes, whether it must decode.
func recordTable(t testing.TB) []struct {
	kind byte
	val  []byte
	ok   bool
} {
	enc := func(m proto.Message) []byte {
		b, err := encodeRecord(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	w := []byte{0, 0, 128, 63}
	h := sha256.Sum256(w)
	th := sha256.Sum256([]byte("tok"))
	good := []proto.Message{
		&Run{RunId: 1, Config: &fedgepb.RunConfig{ModelId: "mlp", Fraction: 0.5}},
		&Round{RoundId: 2, RunId: 1, Selected: []*fedgepb.SelectedDevice{{DeviceId: "a", Nonce: []byte{1}}}},
		&Update{RoundId: 2, DeviceId: "a", EncodedDelta: w, SampleCount: 3},
		&ModelVersion{Version: 2, ParentVersion: 1, ModelId: "mlp", Weights: w, WeightsHash: h[:]},
		&Device{DeviceId: "a", PublicKey: make([]byte, 32)},
		&Metrics{RunId: 1, RoundId: 2, Accepted: 4},
		&AuditEntry{Seq: 1, Actor: "admin", Action: "round start"},
		&Token{TokenHash: th[:], UsesLeft: 1},
		&Optimizer{RunId: 1, ModelVersion: 2, Strategy: "fedadam", Steps: 1, M: []float64{0.5}, V: []float64{0.25}},
	}
	type row = struct {
		kind byte
		val  []byte
		ok   bool
	}
	var rows []row
	for i, m := range good {
		b := enc(m)
		rows = append(rows,
			row{byte(i), b, true},
			row{byte(i), nil, false},                           // empty
			row{byte(i), append([]byte{2}, b[1:]...), false},   // unknown format version
			row{byte(i), []byte{formatVersion}, false},         // zero record breaks invariants
			row{byte(i), append([]byte{1}, 0xff, 0xff), false}, // bad protobuf
		)
		// Truncated mid-field (the last field is a varint or bytes of
		// length > 1, so dropping its last byte breaks it).
		rows = append(rows, row{byte(i), b[:len(b)-1], false})
	}
	badHash := &ModelVersion{Version: 2, ParentVersion: 1, ModelId: "mlp", Weights: w, WeightsHash: make([]byte, 32)}
	rows = append(rows, row{3, enc(badHash), false})
	rows = append(rows, row{2, enc(&Update{RoundId: 2, DeviceId: "../x"}), false})
	return rows
}

func TestDecodeRecords(t *testing.T) {
	for i, r := range recordTable(t) {
		_, err := decoders[r.kind](r.val)
		if (err == nil) != r.ok {
			t.Errorf("row %d (kind %d, %d bytes): err = %v, want ok=%v", i, r.kind, len(r.val), err, r.ok)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, r := range recordTable(f) {
		f.Add(r.kind, r.val)
	}
	f.Fuzz(func(t *testing.T, kind byte, val []byte) {
		dec := decoders[int(kind)%len(decoders)]
		m, err := dec(val)
		if err != nil {
			return
		}
		// A decoded record re-encodes to a value that decodes to the same record.
		b, err := encodeRecord(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := dec(b)
		if err != nil {
			t.Fatalf("decode of re-encoded record: %v", err)
		}
		if !proto.Equal(m, m2) {
			t.Fatalf("round trip changed the record:\n%v\n%v", m, m2)
		}
	})
}

func FuzzDecodeCounter(f *testing.F) {
	for _, b := range [][]byte{nil, {1}, encodeCounter(0), encodeCounter(1 << 40), make([]byte, 9)} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeCounter(b)
		if (err == nil) != (len(b) == 8) {
			t.Fatalf("decodeCounter(%x): err %v", b, err)
		}
		if err == nil && string(encodeCounter(v)) != string(b) {
			t.Fatalf("counter %x does not round trip", b)
		}
	})
}
