package runtime

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// maxMetadataLen bounds the metadata text a module may present.
const maxMetadataLen = 1 << 16

// Limits on what metadata may declare, so a hostile module cannot make the
// host allocate without bound.
const (
	maxParams   = 1 << 28
	maxInputLen = 1 << 24
	maxClasses  = 1 << 16
	maxTensors  = 1024
)

// Metadata is a model's self-description (ABI.md, "Metadata").
type Metadata struct {
	Name     string
	Input    []int // shape of one sample, e.g. 28 28 1
	Classes  int
	Params   int
	MaxBatch int
	Tensors  []Tensor
}

// Tensor is one named parameter block: Size values starting at Offset in
// the flat parameter vector, with the given (row-major) shape.
type Tensor struct {
	Name   string
	Offset int
	Shape  []int
}

// Size returns the number of values in the tensor.
func (t Tensor) Size() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// InputLen returns the number of features per sample.
func (m Metadata) InputLen() int {
	n := 1
	for _, d := range m.Input {
		n *= d
	}
	return n
}

// ParseMetadata decodes and validates the metadata text of ABI version 1.
// Unknown keys are ignored so later versions can add lines.
func ParseMetadata(raw []byte) (Metadata, error) {
	var m Metadata
	if len(raw) > maxMetadataLen {
		return m, fmt.Errorf("%w: %d bytes", ErrBadMetadata, len(raw))
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if lines[0] != "fedge-model 1" {
		return m, fmt.Errorf("%w: first line %q, want \"fedge-model 1\"", ErrBadMetadata, trunc(lines[0]))
	}
	seen := map[string]bool{}
	next := 0
	for ln, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) == 0 {
			return m, fmt.Errorf("%w: line %d empty", ErrBadMetadata, ln+2)
		}
		key := f[0]
		if key != "tensor" {
			if seen[key] {
				return m, fmt.Errorf("%w: line %d: duplicate %q", ErrBadMetadata, ln+2, trunc(key))
			}
			seen[key] = true
		}
		var err error
		switch key {
		case "name":
			if len(f) != 2 || len(f[1]) > 64 || !printable(f[1]) {
				err = fmt.Errorf("name must be one printable word of at most 64 bytes")
			} else {
				m.Name = f[1]
			}
		case "input":
			m.Input, err = dims(f[1:], maxInputLen)
		case "classes":
			m.Classes, err = single(f, 2, maxClasses)
		case "params":
			m.Params, err = single(f, 1, maxParams)
		case "max_batch":
			m.MaxBatch, err = single(f, 1, 1<<16)
		case "tensor":
			if len(m.Tensors) == maxTensors {
				err = fmt.Errorf("more than %d tensors", maxTensors)
				break
			}
			var t Tensor
			if len(f) < 4 || !printable(f[1]) || len(f[1]) > 64 {
				err = fmt.Errorf("want: tensor NAME OFFSET DIM...")
				break
			}
			t.Name = f[1]
			if t.Offset, err = strconv.Atoi(f[2]); err != nil || t.Offset != next {
				err = fmt.Errorf("tensor %q offset %q, want %d (tensors are contiguous)", t.Name, f[2], next)
				break
			}
			if t.Shape, err = dims(f[3:], maxParams); err != nil {
				break
			}
			next += t.Size()
			if next > maxParams {
				err = fmt.Errorf("tensors exceed %d values", maxParams)
				break
			}
			m.Tensors = append(m.Tensors, t)
		}
		if err != nil {
			return m, fmt.Errorf("%w: line %d: %v", ErrBadMetadata, ln+2, err)
		}
	}
	for _, k := range []string{"name", "input", "classes", "params", "max_batch"} {
		if !seen[k] {
			return m, fmt.Errorf("%w: missing %q", ErrBadMetadata, k)
		}
	}
	if len(m.Tensors) == 0 || next != m.Params {
		return m, fmt.Errorf("%w: tensors cover %d values, params %d", ErrBadMetadata, next, m.Params)
	}
	return m, nil
}

func single(f []string, lo, hi int) (int, error) {
	if len(f) != 2 {
		return 0, fmt.Errorf("%s takes one value", f[0])
	}
	v, err := strconv.Atoi(f[1])
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("%s %q not an integer in [%d,%d]", f[0], trunc(f[1]), lo, hi)
	}
	return v, nil
}

func dims(f []string, limit int) ([]int, error) {
	if len(f) == 0 || len(f) > 8 {
		return nil, fmt.Errorf("want 1 to 8 dimensions, got %d", len(f))
	}
	out := make([]int, len(f))
	prod := 1
	for i, s := range f {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > limit {
			return nil, fmt.Errorf("dimension %q not an integer in [1,%d]", trunc(s), limit)
		}
		prod *= v
		if prod > limit {
			return nil, fmt.Errorf("dimensions multiply past %d", limit)
		}
		out[i] = v
	}
	return out, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return s != ""
}

func trunc(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return string(bytes.ToValidUTF8([]byte(s), []byte("?")))
}
