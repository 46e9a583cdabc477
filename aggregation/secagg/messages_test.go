package secagg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// wireMsg is one entry of the shared table of good and bad wire messages,
// used by the decoder tests and as seeds of every fuzz target.
type wireMsg struct {
	name string
	typ  MsgType
	b    []byte
	ok   bool
}

// wireTable records every message of a small honest round (both
// directions) and derives malformed variants from each.
var wireTable = sync.OnceValue(func() []wireMsg {
	r := newRound(panicTB{}, testConfig(4, 3, 3, 3), 21)
	r.dropAt[3] = StageMaskedInputCollection // so an UnmaskRequest asks for a key share
	var good []wireMsg
	r.tamper = func(s Stage, to uint32, msg []byte) []byte {
		t, _, _ := PeekType(msg)
		good = append(good, wireMsg{name: "server " + s.String(), typ: t, b: msg, ok: true})
		return msg
	}
	if _, err := r.run(); err != nil {
		panic(err)
	}
	for _, m := range r.seen {
		t, _, _ := PeekType(m.msg)
		good = append(good, wireMsg{name: "client", typ: t, b: m.msg, ok: true})
	}
	out := append([]wireMsg(nil), good...)
	seenType := map[MsgType]bool{}
	for _, g := range good {
		if seenType[g.typ] {
			continue
		}
		seenType[g.typ] = true
		bad := func(name string, b []byte) { out = append(out, wireMsg{name: name, typ: g.typ, b: b}) }
		bad("empty", nil)
		bad("header only", g.b[:headerLen])
		bad("truncated", g.b[:len(g.b)-1])
		bad("trailing byte", append(bytes.Clone(g.b), 0))
		v := bytes.Clone(g.b)
		v[0] = 2
		bad("wrong version", v)
		w := bytes.Clone(g.b)
		w[1] = byte(g.typ%9 + 1)
		bad("wrong type", w)
		if g.typ != MsgAdvertiseKeys && g.typ != MsgConsistencySig && len(g.b) >= headerLen+8 { // counts
			huge := bytes.Clone(g.b)
			binary.LittleEndian.PutUint32(huge[headerLen:], 0xFFFFFFFF)
			binary.LittleEndian.PutUint32(huge[headerLen+4:], 0xFFFFFFFF)
			bad("huge counts", huge)
		}
	}
	return out
})

// panicTB lets the harness run outside a test (the table is built once).
type panicTB struct{ testing.TB }

func (panicTB) Helper()                           {}
func (panicTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (panicTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

type decoder struct {
	typ MsgType
	rt  func([]byte) ([]byte, error) // decode, then re-encode
}

func rt[T any](dec func([]byte) (*T, error), enc func(*T) []byte) func([]byte) ([]byte, error) {
	return func(b []byte) ([]byte, error) {
		m, err := dec(b)
		if err != nil {
			return nil, err
		}
		return enc(m), nil
	}
}

var decoders = map[MsgType]decoder{
	MsgAdvertiseKeys:      {MsgAdvertiseKeys, rt(UnmarshalAdvertiseKeys, (*AdvertiseKeys).Marshal)},
	MsgNeighbourKeys:      {MsgNeighbourKeys, rt(UnmarshalNeighbourKeys, (*NeighbourKeys).Marshal)},
	MsgShareKeys:          {MsgShareKeys, rt(UnmarshalShareKeys, (*ShareKeys).Marshal)},
	MsgForwardedShares:    {MsgForwardedShares, rt(UnmarshalForwardedShares, (*ForwardedShares).Marshal)},
	MsgMaskedInput:        {MsgMaskedInput, rt(UnmarshalMaskedInput, (*MaskedInput).Marshal)},
	MsgConsistencyRequest: {MsgConsistencyRequest, rt(UnmarshalConsistencyRequest, (*ConsistencyRequest).Marshal)},
	MsgConsistencySig:     {MsgConsistencySig, rt(UnmarshalConsistencySig, (*ConsistencySig).Marshal)},
	MsgUnmaskRequest:      {MsgUnmaskRequest, rt(UnmarshalUnmaskRequest, (*UnmaskRequest).Marshal)},
	MsgUnmaskResponse:     {MsgUnmaskResponse, rt(UnmarshalUnmaskResponse, (*UnmaskResponse).Marshal)},
}

// TestWireTable: every good message decodes and re-encodes to the same
// bytes; every bad one is rejected with ErrMalformed by its decoder.
func TestWireTable(t *testing.T) {
	covered := map[MsgType]bool{}
	for _, w := range wireTable() {
		got, err := decoders[w.typ].rt(w.b)
		if w.ok {
			covered[w.typ] = true
			if err != nil {
				t.Errorf("%s %d: %v", w.name, w.typ, err)
			} else if !bytes.Equal(got, w.b) {
				t.Errorf("%s %d: re-encoding differs", w.name, w.typ)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("bad %s of type %d: err=%v, want ErrMalformed", w.name, w.typ, err)
		}
	}
	if len(covered) != len(decoders) {
		t.Fatalf("table covers %d of %d message types", len(covered), len(decoders))
	}
}

func TestDecodeSpecificRejections(t *testing.T) {
	bitmap := (&ConsistencyRequest{Round: 1, N: 3, Survivors: []byte{0b1000}}).Marshal()
	zeroN := (&ConsistencyRequest{Round: 1, N: 0}).Marshal()
	kind := (&UnmaskRequest{Round: 1, Requests: []ShareRequest{{Peer: 1, Kind: 3}}}).Marshal()
	if _, err := UnmarshalConsistencyRequest(bitmap); !errors.Is(err, ErrMalformed) {
		t.Errorf("bit past N: %v", err)
	}
	if _, err := UnmarshalConsistencyRequest(zeroN); !errors.Is(err, ErrMalformed) {
		t.Errorf("N=0: %v", err)
	}
	if _, err := UnmarshalUnmaskRequest(kind); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown share kind: %v", err)
	}
}

func fuzzDecoder(f *testing.F, typ MsgType) {
	for _, w := range wireTable() {
		f.Add(w.b)
	}
	d := decoders[typ]
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := d.rt(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decoder error without ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("accepted input does not re-encode to itself")
		}
	})
}

func FuzzAdvertiseKeys(f *testing.F)      { fuzzDecoder(f, MsgAdvertiseKeys) }
func FuzzNeighbourKeys(f *testing.F)      { fuzzDecoder(f, MsgNeighbourKeys) }
func FuzzShareKeys(f *testing.F)          { fuzzDecoder(f, MsgShareKeys) }
func FuzzForwardedShares(f *testing.F)    { fuzzDecoder(f, MsgForwardedShares) }
func FuzzMaskedInput(f *testing.F)        { fuzzDecoder(f, MsgMaskedInput) }
func FuzzConsistencyRequest(f *testing.F) { fuzzDecoder(f, MsgConsistencyRequest) }
func FuzzConsistencySig(f *testing.F)     { fuzzDecoder(f, MsgConsistencySig) }
func FuzzUnmaskRequest(f *testing.F)      { fuzzDecoder(f, MsgUnmaskRequest) }
func FuzzUnmaskResponse(f *testing.F)     { fuzzDecoder(f, MsgUnmaskResponse) }

// fuzzTranscript is what four honest clients send up to the masked-input
// stage, grouped by stage, so a fuzz iteration only replays it into a new
// server instead of running the clients' cryptography again.
var fuzzTranscript = sync.OnceValue(func() [][]seenMsg {
	r := newRound(panicTB{}, testConfig(4, 3, 3, 3), 21)
	var byStage [][]seenMsg
	var out []Outbound
	for r.server.Stage() < StageMaskedInputCollection {
		before := len(r.seen)
		r.step(out)
		byStage = append(byStage, r.seen[before:])
		var err error
		if out, err = r.server.Advance(); err != nil {
			panic(err)
		}
	}
	return byStage
})

// FuzzServerReceive feeds arbitrary bytes to a server in its masked-input
// stage (whose decoder is a copy-free fast path) and checks that a rejected
// message changes nothing.
func FuzzServerReceive(f *testing.F) {
	for _, w := range wireTable() {
		f.Add(uint32(1), w.b)
	}
	f.Fuzz(func(t *testing.T, from uint32, b []byte) {
		srv, err := NewServer(testConfig(4, 3, 3, 3))
		if err != nil {
			t.Fatal(err)
		}
		for _, stage := range fuzzTranscript() {
			for _, m := range stage {
				if err := srv.Receive(m.from, m.msg); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := srv.Advance(); err != nil {
				t.Fatal(err)
			}
		}
		before := append([]uint32(nil), srv.acc...)
		if err := srv.Receive(from, b); err != nil {
			if !bytes.Equal(uint32Bytes(before), uint32Bytes(srv.acc)) || len(srv.Pending()) != 4 {
				t.Fatalf("rejected message (%v) changed the server", err)
			}
		}
	})
}

func uint32Bytes(v []uint32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}
