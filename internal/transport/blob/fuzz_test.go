package blob

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
)

// The fuzz targets check that decoders never panic, that whatever they
// accept satisfies the invariants the sender and receiver rely on, and that
// accepted messages survive a re-encode.

func FuzzDecodeDescriptor(f *testing.F) {
	for _, tc := range descriptorCases() {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := DecodeDescriptor(raw, Limits{})
		if err != nil {
			return
		}
		if len(d.BlobId) != 32 || d.ChunkSize == 0 || uint64(len(d.ChunkHashes)) != chunkCount(d.Length, d.ChunkSize) {
			t.Fatalf("accepted an inconsistent descriptor: %v", d)
		}
		again, err := DecodeDescriptor(mustMarshal(d), Limits{})
		if err != nil || !proto.Equal(d, again) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzDecodeChunk(f *testing.F) {
	for _, tc := range chunkCases() {
		f.Add(tc.raw)
	}
	_, d, _ := sample()
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := DecodeChunk(raw, Limits{})
		if err != nil {
			return
		}
		if len(c.BlobId) != 32 || len(c.ChunkHash) != 32 || len(c.Data) == 0 {
			t.Fatalf("accepted a malformed chunk: %v", c)
		}
		// Checking against a descriptor must not panic whatever the index.
		if CheckChunk(d, c) == nil && !bytes.Equal(c.BlobId, d.BlobId) {
			t.Fatalf("chunk of another blob passed CheckChunk")
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	for _, tc := range requestCases() {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := DecodeRequest(raw, Limits{})
		if err != nil {
			return
		}
		if len(r.BlobId) != 32 || len(r.Indices) > DefaultMaxRequestIndices {
			t.Fatalf("accepted a malformed request: %v", r)
		}
		for i := 1; i < len(r.Indices); i++ {
			if r.Indices[i] <= r.Indices[i-1] {
				t.Fatalf("indices not sorted and unique: %v", r.Indices)
			}
		}
	})
}
