package fleet

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/aggregation/codec"
	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	"github.com/fedge-dev/fedge/simulations/behavior"
)

// errBlobAttack is returned when an update-level attack meets an update
// whose delta travels as a blob: the simulator cannot rewrite it from
// outside the agent (see the package comment).
var errBlobAttack = errors.New("update-level attacks need inline float32 or float16 deltas; this update's delta is a blob or uses another codec")

// corrupt applies the device's update-level attack (sign flip, scaling,
// noise) to a sealed update. A malicious device controls its own key, so
// the simulator decodes the delta, corrupts it and signs the envelope again
// with the device's key under the same message id, which the agent's
// pending-update bookkeeping matches acknowledgements against.
func (f *Fleet) corrupt(dev int, env *wire.Envelope, u *fedgepb.Update, raw []byte) ([]byte, error) {
	a := f.devices[dev].attack
	if a == behavior.None || a == behavior.LabelFlip {
		return raw, nil
	}
	if len(u.EncodedDelta) < codec.HeaderSize || (u.Codec != fedgepb.Codec_CODEC_FLOAT32 && u.Codec != fedgepb.Codec_CODEC_FLOAT16) {
		return nil, errBlobAttack
	}
	n := int(uint32(u.EncodedDelta[2]) | uint32(u.EncodedDelta[3])<<8 | uint32(u.EncodedDelta[4])<<16 | uint32(u.EncodedDelta[5])<<24)
	if n <= 0 || n > codec.MaxDim {
		return nil, fmt.Errorf("attack: delta header claims %d parameters", n)
	}
	delta := make([]float32, n)
	id, err := codec.Decode(delta, u.EncodedDelta)
	if err != nil {
		return nil, fmt.Errorf("attack: decode delta: %w", err)
	}
	f.profile.Corrupt(a, dev, int(u.RoundId), delta)
	enc, err := codec.NewEncoder(codec.Spec{ID: id}, nil)
	if err != nil {
		return nil, fmt.Errorf("attack: %w", err)
	}
	if u.EncodedDelta, err = enc.Encode(make([]byte, 0, enc.EncodedSize(n)), delta); err != nil {
		return nil, fmt.Errorf("attack: encode delta: %w", err)
	}
	u.DeltaLength = uint64(len(u.EncodedDelta))
	if env.Payload, err = (proto.MarshalOptions{Deterministic: true}).Marshal(u); err != nil {
		return nil, fmt.Errorf("attack: %w", err)
	}
	env.Msg = u
	if err := env.Sign(f.devices[dev].key); err != nil {
		return nil, fmt.Errorf("attack: sign: %w", err)
	}
	out, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("attack: %w", err)
	}
	f.track.update(func() { f.track.attacked[u.RoundId]++ })
	return out, nil
}

// flipped is a label-flipping attacker's view of its data: label y reads
// as classes-1-y.
type flipped struct{ data.Source }

func (s flipped) Sample(i int) ([]float32, int) {
	x, y := s.Source.Sample(i)
	return x, behavior.FlipLabel(y, s.Source.Classes())
}
