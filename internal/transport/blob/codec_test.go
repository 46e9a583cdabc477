package blob

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// wireCase is one message of the shared table of good and bad blob
// messages; the decoder tests and the fuzz seeds both use it.
type wireCase struct {
	name string
	raw  []byte
	ok   bool
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// sample is a 3-chunk blob of 10 bytes in chunks of 4.
func sample() ([]byte, *fedgepb.BlobDescriptor, [][]byte) {
	payload := []byte("0123456789")
	d, chunks, err := Split(payload, 4)
	if err != nil {
		panic(err)
	}
	return payload, d, chunks
}

func descriptorCases() []wireCase {
	_, d, _ := sample()
	mod := func(f func(*fedgepb.BlobDescriptor)) []byte {
		c := proto.Clone(d).(*fedgepb.BlobDescriptor)
		f(c)
		return mustMarshal(c)
	}
	empty, _, _ := Split(nil, 4)
	return []wireCase{
		{"good", mustMarshal(d), true},
		{"good empty blob", mustMarshal(empty), true},
		{"empty blob with wrong id", mod(func(c *fedgepb.BlobDescriptor) { c.Length, c.ChunkHashes = 0, nil }), false},
		{"no bytes", nil, false},
		{"truncated", mustMarshal(d)[:20], false},
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff}, false},
		{"short id", mod(func(c *fedgepb.BlobDescriptor) { c.BlobId = c.BlobId[:31] }), false},
		{"zero chunk size", mod(func(c *fedgepb.BlobDescriptor) { c.ChunkSize = 0 }), false},
		{"chunk size over limit", mod(func(c *fedgepb.BlobDescriptor) { c.ChunkSize = DefaultMaxChunkSize + 1 }), false},
		{"length over limit", mod(func(c *fedgepb.BlobDescriptor) { c.Length = DefaultMaxBlobSize + 1 }), false},
		{"too few hashes", mod(func(c *fedgepb.BlobDescriptor) { c.ChunkHashes = c.ChunkHashes[:2] }), false},
		{"too many hashes", mod(func(c *fedgepb.BlobDescriptor) { c.ChunkHashes = append(c.ChunkHashes, c.ChunkHashes[0]) }), false},
		{"short hash", mod(func(c *fedgepb.BlobDescriptor) { c.ChunkHashes[1] = c.ChunkHashes[1][:16] }), false},
		{"huge count", mod(func(c *fedgepb.BlobDescriptor) { c.Length, c.ChunkSize = DefaultMaxBlobSize, 1 }), false},
	}
}

func chunkCases() []wireCase {
	_, d, chunks := sample()
	good := &fedgepb.BlobChunk{BlobId: d.BlobId, Index: 1, ChunkHash: d.ChunkHashes[1], Data: chunks[1]}
	mod := func(f func(*fedgepb.BlobChunk)) []byte {
		c := proto.Clone(good).(*fedgepb.BlobChunk)
		f(c)
		return mustMarshal(c)
	}
	return []wireCase{
		{"good", mustMarshal(good), true},
		{"no bytes", nil, false},
		{"garbage", []byte{0x0a, 0xff, 0x01}, false},
		{"short id", mod(func(c *fedgepb.BlobChunk) { c.BlobId = c.BlobId[:8] }), false},
		{"short hash", mod(func(c *fedgepb.BlobChunk) { c.ChunkHash = nil }), false},
		{"no data", mod(func(c *fedgepb.BlobChunk) { c.Data = nil }), false},
		{"data over limit", mod(func(c *fedgepb.BlobChunk) { c.Data = make([]byte, DefaultMaxChunkSize+1) }), false},
	}
}

func requestCases() []wireCase {
	_, d, _ := sample()
	good := &fedgepb.BlobRequest{BlobId: d.BlobId, Indices: []uint32{2, 0, 2}}
	return []wireCase{
		{"good", mustMarshal(good), true},
		{"descriptor request", mustMarshal(&fedgepb.BlobRequest{BlobId: d.BlobId}), true},
		{"no bytes", nil, false},
		{"garbage", []byte{0x12, 0x05, 0x80}, false},
		{"short id", mustMarshal(&fedgepb.BlobRequest{BlobId: d.BlobId[:31]}), false},
		{"too many indices", mustMarshal(&fedgepb.BlobRequest{BlobId: d.BlobId, Indices: make([]uint32, DefaultMaxRequestIndices+1)}), false},
	}
}

func TestDecoders(t *testing.T) {
	for _, tc := range descriptorCases() {
		_, err := DecodeDescriptor(tc.raw, Limits{})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrHashMismatch)) {
			t.Errorf("descriptor %s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	for _, tc := range chunkCases() {
		_, err := DecodeChunk(tc.raw, Limits{})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("chunk %s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	for _, tc := range requestCases() {
		r, err := DecodeRequest(tc.raw, Limits{})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("request %s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if tc.name == "good" && (len(r.Indices) != 2 || r.Indices[0] != 0 || r.Indices[1] != 2) {
			t.Errorf("request indices %v, want sorted and unique [0 2]", r.Indices)
		}
	}
}

func TestCheckChunk(t *testing.T) {
	_, d, chunks := sample()
	chunk := func(i uint32, data []byte, hash []byte) *fedgepb.BlobChunk {
		return &fedgepb.BlobChunk{BlobId: d.BlobId, Index: i, ChunkHash: hash, Data: data}
	}
	flipped := bytes.Clone(chunks[0])
	flipped[0] ^= 1
	flippedHash := sha256.Sum256(flipped)
	other := bytes.Repeat([]byte{7}, 32)
	tests := []struct {
		name string
		c    *fedgepb.BlobChunk
		want error
	}{
		{"first", chunk(0, chunks[0], d.ChunkHashes[0]), nil},
		{"last, short", chunk(2, chunks[2], d.ChunkHashes[2]), nil},
		{"index out of range", chunk(3, chunks[2], d.ChunkHashes[2]), ErrInvalid},
		{"wrong length", chunk(2, chunks[0], d.ChunkHashes[2]), ErrInvalid},
		{"corrupted data", chunk(0, flipped, d.ChunkHashes[0]), ErrHashMismatch},
		{"corrupted data, consistent hash", chunk(0, flipped, flippedHash[:]), ErrHashMismatch},
		{"wrong declared hash", chunk(0, chunks[0], d.ChunkHashes[1]), ErrHashMismatch},
		{"other blob", &fedgepb.BlobChunk{BlobId: other, Index: 0, ChunkHash: d.ChunkHashes[0], Data: chunks[0]}, ErrInvalid},
	}
	for _, tc := range tests {
		err := CheckChunk(d, tc.c)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		size, chunk, want int
	}{
		{0, 4, 0}, {1, 4, 1}, {4, 4, 1}, {5, 4, 2}, {1 << 20, 256 << 10, 4}, {1<<20 + 1, 256 << 10, 5},
	} {
		payload := make([]byte, tc.size)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		d, chunks, err := Split(payload, tc.chunk)
		if err != nil {
			t.Fatalf("Split(%d, %d): %v", tc.size, tc.chunk, err)
		}
		if len(chunks) != tc.want || len(d.ChunkHashes) != tc.want {
			t.Errorf("Split(%d, %d): %d chunks, want %d", tc.size, tc.chunk, len(chunks), tc.want)
		}
		if err := ValidateDescriptor(d, Limits{}); err != nil {
			t.Errorf("Split(%d, %d) made an invalid descriptor: %v", tc.size, tc.chunk, err)
		}
		if !bytes.Equal(bytes.Join(chunks, nil), payload) {
			t.Errorf("Split(%d, %d): chunks do not reassemble", tc.size, tc.chunk)
		}
	}
	if _, _, err := Split([]byte("x"), 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Split with chunk size 0: err = %v", err)
	}
}

func TestIDAndTopics(t *testing.T) {
	id := Sum([]byte("model"))
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseID(String()) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "zz", id.String()[:63], id.String() + "0", "g" + id.String()[1:]} {
		if _, err := ParseID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseID(%q) err = %v", bad, err)
		}
	}
	c, d := Coordinator("f"), Device("f", "d1")
	tests := []struct{ got, want string }{
		{c.DescriptorTopic(id), "fedge/v1/f/global/blob/" + id.String() + "/desc"},
		{c.ChunkTopic(id), "fedge/v1/f/global/blob/" + id.String() + "/chunk"},
		{c.RequestTopic(id, "d2"), "fedge/v1/f/dev/d2/out/blob/" + id.String() + "/req"},
		{c.RequestFilter(), "fedge/v1/f/dev/+/out/blob/+/req"},
		{d.DescriptorTopic(id), "fedge/v1/f/dev/d1/out/blob/" + id.String() + "/desc"},
		{d.ChunkTopic(id), "fedge/v1/f/dev/d1/out/blob/" + id.String() + "/chunk"},
		{d.RequestTopic(id, ""), "fedge/v1/f/dev/d1/in/blob/" + id.String() + "/req"},
		{d.RequestFilter(), "fedge/v1/f/dev/d1/in/blob/+/req"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
	if got, err := requestID(c.RequestTopic(id, "d2")); err != nil || got != id {
		t.Errorf("requestID = %v, %v", got, err)
	}
	for _, bad := range []string{"fedge/v1/f/dev/d2/out/blob/" + id.String(), "fedge/v1/f/dev/d2/out/update", "x/y"} {
		if _, err := requestID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("requestID(%q) err = %v", bad, err)
		}
	}
}
