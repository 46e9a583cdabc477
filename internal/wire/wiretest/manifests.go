package wiretest

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// ManifestCase is one standalone marshalled model manifest and what
// wire.DecodeManifest with Limits() and the coordinator's public key must
// make of it.
type ManifestCase struct {
	Name   string
	Raw    []byte
	Reason wire.Reason
}

// Manifests returns the table of good and bad standalone manifests, fresh on
// every call.
func Manifests() []ManifestCase {
	good := marshal(Manifest())
	var cs []ManifestCase
	add := func(name string, raw []byte, r wire.Reason) {
		cs = append(cs, ManifestCase{Name: name, Raw: raw, Reason: r})
	}
	// mod returns the good manifest changed by f, keeping its now stale
	// signature (invalid manifests cannot be signed).
	mod := func(f func(*fedgepb.ModelManifest)) []byte {
		m := Manifest()
		f(m)
		return marshal(m)
	}
	add("good", good, wire.ReasonNone)
	add("good later version", func() []byte {
		m := Manifest()
		m.Version, m.RoundId = 4, 7
		if err := wire.SignManifest(m, Key(wire.CoordinatorID)); err != nil {
			panic("wiretest: " + err.Error())
		}
		return marshal(m)
	}(), wire.ReasonNone)
	add("empty", nil, wire.ReasonBadField)
	add("garbage", []byte{0x0a, 0xff, 0xff}, wire.ReasonMalformed)
	add("truncated", good[:len(good)-5], wire.ReasonMalformed)
	add("unknown field", protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), good...), 99, protowire.VarintType), 7), wire.ReasonBadField)
	add("oversize", append(append([]byte(nil), good...), make([]byte, Limits().MaxMessageBytes)...), wire.ReasonTooLarge)
	add("version bumped without re-signing", mod(func(m *fedgepb.ModelManifest) { m.Version++ }), wire.ReasonBadSignature)
	add("weights hash changed", mod(func(m *fedgepb.ModelManifest) { m.WeightsHash = Hash("evil weights") }), wire.ReasonBadSignature)
	add("created time changed", mod(func(m *fedgepb.ModelManifest) { m.CreatedUnixMs++ }), wire.ReasonBadSignature)
	add("signed by a device", func() []byte {
		m := Manifest()
		if err := wire.SignManifest(m, Key(Device)); err != nil {
			panic("wiretest: " + err.Error())
		}
		return marshal(m)
	}(), wire.ReasonBadSignature)
	add("missing signature", mod(func(m *fedgepb.ModelManifest) { m.Signature = nil }), wire.ReasonBadSignature)
	add("version zero", mod(func(m *fedgepb.ModelManifest) { m.Version = 0 }), wire.ReasonBadField)
	add("bad model id", mod(func(m *fedgepb.ModelManifest) { m.ModelId = "../etc" }), wire.ReasonBadField)
	add("short wasm hash", mod(func(m *fedgepb.ModelManifest) { m.WasmHash = m.WasmHash[:16] }), wire.ReasonBadField)
	add("param count mismatch", mod(func(m *fedgepb.ModelManifest) { m.ParamCount = 3 }), wire.ReasonBadField)
	add("weights over blob limit", mod(func(m *fedgepb.ModelManifest) {
		m.WeightsLength = 4 * (Limits().MaxBlobBytes/4 + 1)
		m.ParamCount = m.WeightsLength / 4
	}), wire.ReasonTooLarge)
	add("envelope instead of manifest", Find("good PAYLOAD_TYPE_UPDATE").Raw, wire.ReasonBadField)
	return cs
}

// ManifestBytes returns Manifest() marshalled.
func ManifestBytes() []byte { return marshal(Manifest()) }
