package blob

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Defaults of Limits and the sender's chunk size.
const (
	DefaultChunkSize         = 256 << 10
	DefaultMaxChunkSize      = 1 << 20
	DefaultMaxBlobSize       = 1 << 30
	DefaultMaxRequestIndices = 1024
)

// Limits bound what a decoder accepts. Zero fields take the defaults.
type Limits struct {
	MaxBlobSize       uint64
	MaxChunkSize      uint32
	MaxRequestIndices int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBlobSize == 0 {
		l.MaxBlobSize = DefaultMaxBlobSize
	}
	if l.MaxChunkSize == 0 {
		l.MaxChunkSize = DefaultMaxChunkSize
	}
	if l.MaxRequestIndices <= 0 {
		l.MaxRequestIndices = DefaultMaxRequestIndices
	}
	return l
}

// chunkCount is the number of chunks of a blob; an empty blob has none.
func chunkCount(length uint64, chunkSize uint32) uint64 {
	return (length + uint64(chunkSize) - 1) / uint64(chunkSize)
}

// Split builds the descriptor of payload cut into chunks of chunkSize
// bytes and returns it with the chunk hashes' source slices.
func Split(payload []byte, chunkSize int) (*fedgepb.BlobDescriptor, [][]byte, error) {
	if chunkSize <= 0 || chunkSize > 1<<31-1 {
		return nil, nil, fmt.Errorf("%w: chunk size %d", ErrInvalid, chunkSize)
	}
	id := Sum(payload)
	d := &fedgepb.BlobDescriptor{BlobId: id[:], Length: uint64(len(payload)), ChunkSize: uint32(chunkSize)}
	var chunks [][]byte
	for off := 0; off < len(payload); off += chunkSize {
		c := payload[off:min(off+chunkSize, len(payload))]
		h := sha256.Sum256(c)
		d.ChunkHashes = append(d.ChunkHashes, h[:])
		chunks = append(chunks, c)
	}
	return d, chunks, nil
}

// DecodeDescriptor parses and validates a descriptor: a 32-byte id, a
// length within limits, a chunk size in 1..MaxChunkSize, and exactly one
// 32-byte hash per chunk.
func DecodeDescriptor(b []byte, lim Limits) (*fedgepb.BlobDescriptor, error) {
	d := new(fedgepb.BlobDescriptor)
	if err := proto.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("%w: descriptor: %v", ErrInvalid, err)
	}
	if err := ValidateDescriptor(d, lim); err != nil {
		return nil, err
	}
	return d, nil
}

// ValidateDescriptor checks a decoded descriptor (see DecodeDescriptor).
func ValidateDescriptor(d *fedgepb.BlobDescriptor, lim Limits) error {
	lim = lim.withDefaults()
	if _, err := idFromBytes(d.GetBlobId()); err != nil {
		return fmt.Errorf("descriptor: %w", err)
	}
	if d.GetLength() > lim.MaxBlobSize {
		return fmt.Errorf("%w: descriptor: length %d over limit %d", ErrInvalid, d.GetLength(), lim.MaxBlobSize)
	}
	if d.GetChunkSize() == 0 || d.GetChunkSize() > lim.MaxChunkSize {
		return fmt.Errorf("%w: descriptor: chunk size %d outside 1..%d", ErrInvalid, d.GetChunkSize(), lim.MaxChunkSize)
	}
	if n := chunkCount(d.GetLength(), d.GetChunkSize()); uint64(len(d.GetChunkHashes())) != n {
		return fmt.Errorf("%w: descriptor: %d chunk hashes, want %d", ErrInvalid, len(d.GetChunkHashes()), n)
	}
	for i, h := range d.GetChunkHashes() {
		if len(h) != sha256.Size {
			return fmt.Errorf("%w: descriptor: chunk hash %d is %d bytes", ErrInvalid, i, len(h))
		}
	}
	if d.GetLength() == 0 {
		if id := Sum(nil); !bytes.Equal(d.GetBlobId(), id[:]) {
			return fmt.Errorf("%w: descriptor: empty blob with id other than sha256 of nothing", ErrHashMismatch)
		}
	}
	return nil
}

// DecodeChunk parses a chunk and checks the shape of its fields: a 32-byte
// blob id and chunk hash, and at most MaxChunkSize bytes of data. Whether
// it belongs to a blob is CheckChunk's job.
func DecodeChunk(b []byte, lim Limits) (*fedgepb.BlobChunk, error) {
	lim = lim.withDefaults()
	c := new(fedgepb.BlobChunk)
	if err := proto.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("%w: chunk: %v", ErrInvalid, err)
	}
	if _, err := idFromBytes(c.GetBlobId()); err != nil {
		return nil, fmt.Errorf("chunk: %w", err)
	}
	if len(c.GetChunkHash()) != sha256.Size {
		return nil, fmt.Errorf("%w: chunk %d: hash is %d bytes", ErrInvalid, c.GetIndex(), len(c.GetChunkHash()))
	}
	if len(c.GetData()) == 0 || uint64(len(c.GetData())) > uint64(lim.MaxChunkSize) {
		return nil, fmt.Errorf("%w: chunk %d: %d data bytes outside 1..%d", ErrInvalid, c.GetIndex(), len(c.GetData()), lim.MaxChunkSize)
	}
	return c, nil
}

// CheckChunk verifies that c is chunk c.Index of the blob d describes: same
// blob, index in range, the expected length, and data hashing to the
// descriptor's hash. Errors wrap ErrInvalid or ErrHashMismatch.
func CheckChunk(d *fedgepb.BlobDescriptor, c *fedgepb.BlobChunk) error {
	if !bytes.Equal(c.GetBlobId(), d.GetBlobId()) {
		return fmt.Errorf("%w: chunk of another blob", ErrInvalid)
	}
	n := uint64(len(d.GetChunkHashes()))
	i := uint64(c.GetIndex())
	if i >= n {
		return fmt.Errorf("%w: chunk index %d, blob has %d", ErrInvalid, i, n)
	}
	want := uint64(d.GetChunkSize())
	if i == n-1 {
		want = d.GetLength() - i*uint64(d.GetChunkSize())
	}
	if uint64(len(c.GetData())) != want {
		return fmt.Errorf("%w: chunk %d is %d bytes, want %d", ErrInvalid, i, len(c.GetData()), want)
	}
	h := sha256.Sum256(c.GetData())
	if !bytes.Equal(h[:], d.GetChunkHashes()[i]) {
		return fmt.Errorf("chunk %d: data: %w", i, ErrHashMismatch)
	}
	if !bytes.Equal(c.GetChunkHash(), h[:]) {
		return fmt.Errorf("chunk %d: declared hash: %w", i, ErrHashMismatch)
	}
	return nil
}

// DecodeRequest parses a request: a 32-byte blob id and at most
// MaxRequestIndices indices (none asks for the descriptor). Indices are
// returned sorted and without duplicates; their range is checked by the
// sender, which knows the blob.
func DecodeRequest(b []byte, lim Limits) (*fedgepb.BlobRequest, error) {
	lim = lim.withDefaults()
	r := new(fedgepb.BlobRequest)
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%w: request: %v", ErrInvalid, err)
	}
	if _, err := idFromBytes(r.GetBlobId()); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if len(r.GetIndices()) > lim.MaxRequestIndices {
		return nil, fmt.Errorf("%w: request: %d indices over limit %d", ErrInvalid, len(r.GetIndices()), lim.MaxRequestIndices)
	}
	slices.Sort(r.Indices)
	r.Indices = slices.Compact(r.Indices)
	return r, nil
}
