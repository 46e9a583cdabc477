package codec

import (
	"fmt"
	"math/rand/v2"
)

// Spec is the codec choice for a round, as sent to clients: the codec and
// its parameters. The zero Spec means raw float32.
type Spec struct {
	ID ID
	// BlockSize is the Int8 block length.
	BlockSize int
	// K is the number of coordinates TopK sends.
	K int
	// ErrorFeedback asks TopK clients to keep the unsent residual.
	ErrorFeedback bool
}

// Validate checks the parameters of the chosen codec.
func (s Spec) Validate() error {
	switch s.ID {
	case 0, Float32, Float16:
		return nil
	case Int8:
		if s.BlockSize < 1 || s.BlockSize > MaxInt8Block {
			return fmt.Errorf("codec spec: %w: int8 block size %d not in 1..%d", ErrConfig, s.BlockSize, MaxInt8Block)
		}
		return nil
	case TopK:
		if s.K < 1 || s.K > MaxDim {
			return fmt.Errorf("codec spec: %w: topk k %d not in 1..%d", ErrConfig, s.K, MaxDim)
		}
		return nil
	}
	return fmt.Errorf("codec spec: %w: unknown codec %v", ErrConfig, s.ID)
}

// NewEncoder builds the encoder a Spec describes. rng is required by Int8
// (stochastic rounding) and ignored otherwise.
func NewEncoder(s Spec, rng *rand.Rand) (Encoder, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	switch s.ID {
	case Float16:
		return Float16Codec{}, nil
	case Int8:
		return NewInt8(s.BlockSize, rng)
	case TopK:
		return NewTopK(s.K, s.ErrorFeedback)
	}
	return Float32Codec{}, nil
}
