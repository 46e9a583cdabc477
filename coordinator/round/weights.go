package round

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// EncodeWeights returns w as little-endian float32 bytes (the form hashed
// into manifests and stored in model versions).
func EncodeWeights(w []float32) []byte {
	b := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// DecodeWeights parses little-endian float32 bytes; dim > 0 requires
// exactly dim values.
func DecodeWeights(b []byte, dim int) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("decode weights: %d bytes is not a whole number of float32s", len(b))
	}
	if dim > 0 && len(b) != 4*dim {
		return nil, fmt.Errorf("decode weights: %d values, want %d", len(b)/4, dim)
	}
	w := make([]float32, len(b)/4)
	for i := range w {
		w[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return w, nil
}

// decodeFloat32 is the default DecodeFunc: CODEC_FLOAT32 only. The length
// is left to the machine's shape check.
func decodeFloat32(codec fedgepb.Codec, b []byte, _ int) ([]float32, error) {
	if codec != fedgepb.Codec_CODEC_FLOAT32 {
		return nil, fmt.Errorf("codec %v not supported", codec)
	}
	return DecodeWeights(b, 0)
}

func finite(w []float32) bool {
	for _, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return true
}

func finite64(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

func hashBytes(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// rank is a device's place in the selection order of a round: the smallest
// ranks are selected.
func rank(seed, round uint64, device string) []byte {
	var hdr [16]byte
	binary.BigEndian.PutUint64(hdr[:8], seed)
	binary.BigEndian.PutUint64(hdr[8:], round)
	h := sha256.New()
	h.Write([]byte("fedge-select-v1"))
	h.Write(hdr[:])
	h.Write([]byte(device))
	return h.Sum(nil)
}

// nonce is the 16-byte task nonce of a device in a round.
func nonce(key []byte, run, seed, round uint64, device string) []byte {
	var hdr [24]byte
	binary.BigEndian.PutUint64(hdr[:8], run)
	binary.BigEndian.PutUint64(hdr[8:16], seed)
	binary.BigEndian.PutUint64(hdr[16:], round)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("fedge-nonce-v1"))
	mac.Write(hdr[:])
	mac.Write([]byte(device))
	return mac.Sum(nil)[:16]
}
