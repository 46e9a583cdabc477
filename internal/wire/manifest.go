package wire

import (
	"crypto"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// ManifestSigningBytes returns the canonical bytes a model manifest's
// signature covers, all fields but the signature in field-number order:
//
//	lp("fedge/v1 manifest") || lp(model_id) || u64(version) || lp(wasm_hash) ||
//	u64(wasm_length) || lp(weights_hash) || u64(weights_length) ||
//	u64(param_count) || u64(round_id) || i64(created_unix_ms)
//
// with big-endian integers and lp(x) = u64(len(x)) || x. Unknown fields of a
// decoded manifest are not covered, so ValidateManifest rejects them.
func ManifestSigningBytes(m *fedgepb.ModelManifest) []byte {
	b := make([]byte, 0, 8+len(manifestDomain)+8+len(m.ModelId)+8+8+len(m.WasmHash)+8+8+len(m.WeightsHash)+8*5)
	b = appendLP(b, []byte(manifestDomain))
	b = appendLP(b, []byte(m.ModelId))
	b = binary.BigEndian.AppendUint64(b, m.Version)
	b = appendLP(b, m.WasmHash)
	b = binary.BigEndian.AppendUint64(b, m.WasmLength)
	b = appendLP(b, m.WeightsHash)
	b = binary.BigEndian.AppendUint64(b, m.WeightsLength)
	b = binary.BigEndian.AppendUint64(b, m.ParamCount)
	b = binary.BigEndian.AppendUint64(b, m.RoundId)
	b = binary.BigEndian.AppendUint64(b, uint64(m.CreatedUnixMs))
	return b
}

// ValidateManifest checks a manifest's fields (not its signature): model id
// syntax, version >= 1, 32-byte hashes, lengths within limits.MaxBlobBytes,
// weights_length = 4 x param_count (float32 weights), a 64-byte signature and
// no unknown fields. Every error is a *RejectError.
func ValidateManifest(m *fedgepb.ModelManifest, limits Limits) error {
	limits = limits.withDefaults()
	if m == nil {
		return bad("nil manifest")
	}
	if len(m.ProtoReflect().GetUnknown()) != 0 {
		return bad("manifest has unknown fields (not covered by its signature)")
	}
	if err := checkID("model_id", m.ModelId); err != nil {
		return err
	}
	if m.Version == 0 {
		return bad("manifest version is 0")
	}
	if err := checkHash("wasm_hash", m.WasmHash); err != nil {
		return err
	}
	if err := checkHash("weights_hash", m.WeightsHash); err != nil {
		return err
	}
	if m.WasmLength == 0 || m.WasmLength > limits.MaxBlobBytes {
		return Reject(ReasonTooLarge, "wasm_length %d outside 1..%d", m.WasmLength, limits.MaxBlobBytes)
	}
	if m.WeightsLength == 0 || m.WeightsLength > limits.MaxBlobBytes {
		return Reject(ReasonTooLarge, "weights_length %d outside 1..%d", m.WeightsLength, limits.MaxBlobBytes)
	}
	if m.ParamCount == 0 || m.ParamCount > m.WeightsLength/4 || m.WeightsLength != 4*m.ParamCount {
		return bad("weights_length %d is not 4 x param_count %d", m.WeightsLength, m.ParamCount)
	}
	if m.CreatedUnixMs < 0 {
		return bad("created_unix_ms %d negative", m.CreatedUnixMs)
	}
	if len(m.Signature) != ed25519.SignatureSize {
		return Reject(ReasonBadSignature, "manifest signature has %d bytes, want %d", len(m.Signature), ed25519.SignatureSize)
	}
	return nil
}

// SignManifest sets m.Signature to signer's Ed25519 signature over
// ManifestSigningBytes(m). signer is an ed25519.PrivateKey or an Ed25519
// crypto.Signer. The manifest's fields are validated first (the signature
// itself aside).
func SignManifest(m *fedgepb.ModelManifest, signer crypto.Signer) error {
	probe := proto.Clone(m).(*fedgepb.ModelManifest)
	probe.Signature = make([]byte, ed25519.SignatureSize)
	if err := ValidateManifest(probe, sealLimits); err != nil {
		return fmt.Errorf("sign manifest %s v%d: %w", m.GetModelId(), m.GetVersion(), err)
	}
	sig, err := signEd25519(signer, ManifestSigningBytes(m))
	if err != nil {
		return fmt.Errorf("sign manifest %s v%d: %w", m.ModelId, m.Version, err)
	}
	m.Signature = sig
	return nil
}

// VerifyManifest checks m's fields (structure only: size limits are the
// caller's, see ValidateManifest) and its signature with pub, normally the
// coordinator key the agent pinned at flash time. Every error is a
// *RejectError.
func VerifyManifest(m *fedgepb.ModelManifest, pub ed25519.PublicKey) error {
	if err := ValidateManifest(m, sealLimits); err != nil {
		return err
	}
	if len(pub) != ed25519.PublicKeySize {
		return Reject(ReasonUnknownSender, "manifest key has %d bytes", len(pub))
	}
	if !ed25519.Verify(pub, ManifestSigningBytes(m), m.Signature) {
		return Reject(ReasonBadSignature, "manifest %s v%d signature does not verify", m.ModelId, m.Version)
	}
	return nil
}

// DecodeManifest decodes and validates a standalone marshalled manifest
// (as stored by the agent next to an installed model) and verifies it with
// pub. Every error is a *RejectError.
func DecodeManifest(raw []byte, pub ed25519.PublicKey, limits Limits) (*fedgepb.ModelManifest, error) {
	limits = limits.withDefaults()
	if len(raw) > limits.MaxMessageBytes {
		return nil, Reject(ReasonTooLarge, "manifest of %d bytes, limit %d", len(raw), limits.MaxMessageBytes)
	}
	m := new(fedgepb.ModelManifest)
	if err := proto.Unmarshal(raw, m); err != nil {
		return nil, Reject(ReasonMalformed, "manifest: %w", err)
	}
	if err := ValidateManifest(m, limits); err != nil {
		return nil, err
	}
	if err := VerifyManifest(m, pub); err != nil {
		return nil, err
	}
	return m, nil
}
