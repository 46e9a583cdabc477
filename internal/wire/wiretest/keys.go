package wiretest

import (
	"crypto/ed25519"
	"crypto/sha256"

	"github.com/fedge-dev/fedge/internal/wire"
)

// Identities used by the table.
const (
	Fleet       = "testfleet"
	Device      = "dev-1"   // enrolled device
	OtherDevice = "dev-2"   // another enrolled device
	NewDevice   = "dev-new" // not enrolled; only sends an enrollment request
	Unknown     = "dev-9"   // not enrolled, never known
)

// Key returns the deterministic Ed25519 key of identity name (a device id or
// wire.CoordinatorID). Keys are derived from the name, so they are test keys
// only.
func Key(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("fedge wiretest key " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// Public returns Key(name)'s public key.
func Public(name string) ed25519.PublicKey {
	return Key(name).Public().(ed25519.PublicKey)
}

// Keys returns the key lookup the table expects: the coordinator, Device
// and OtherDevice are known; enrollment requests verify against the key they
// carry (wire.WithEnrollment).
func Keys() wire.KeyFunc {
	return wire.WithEnrollment(wire.StaticKeys(map[string]ed25519.PublicKey{
		wire.CoordinatorID: Public(wire.CoordinatorID),
		Device:             Public(Device),
		OtherDevice:        Public(OtherDevice),
	}))
}

// Limits returns the receive limits the table is built against: small, so
// the oversize cases stay cheap.
func Limits() wire.Limits {
	return wire.Limits{
		MaxMessageBytes: 64 << 10,
		MaxChunkBytes:   16 << 10,
		MaxBlobBytes:    1 << 20,
		MaxRepeated:     256,
		MaxSampleCount:  1 << 20,
		MaxStringBytes:  128,
	}
}

// Hash returns a deterministic 32-byte hash labelled by s.
func Hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// messageID returns a deterministic 16-byte message id labelled by s.
func messageID(s string) []byte { return Hash("message id " + s)[:wire.MessageIDSize] }
