// Package data holds the training data an edge agent (or a simulated one)
// feeds to its model: an in-memory Dataset of float32 feature rows with
// integer labels, index views for partitioning, and decoders for MNIST IDX
// files and CSV files (features..., label) that validate shapes, label ranges
// and truncation before anything is used.
package data

import (
	"errors"
	"fmt"
)

// ErrInvalid marks input that is malformed: wrong shapes, labels out of
// range, truncated or oversized files. Decoders wrap it with details.
var ErrInvalid = errors.New("invalid data")

// Source is what a trainer reads: Len samples of Dim float32 features, each
// with a label in [0, Classes). Sample must not be modified by the caller.
type Source interface {
	Len() int
	Dim() int
	Classes() int
	Sample(i int) (features []float32, label int)
}

// Dataset is an in-memory, row-major set of samples. Features of sample i
// are X[i*Dim : (i+1)*Dim]. Shape describes one sample (e.g. 28,28,1 for
// MNIST) and multiplies to Dim.
type Dataset struct {
	X        []float32
	Y        []int
	Shape    []int
	NumFeat  int
	NumClass int
}

// NewDataset checks that x, y, dim and classes are consistent and every
// label lies in [0, classes), and returns the dataset sharing x and y.
func NewDataset(x []float32, y []int, dim, classes int) (*Dataset, error) {
	if dim <= 0 || classes < 2 {
		return nil, fmt.Errorf("%w: dim %d, classes %d", ErrInvalid, dim, classes)
	}
	if len(x) != len(y)*dim {
		return nil, fmt.Errorf("%w: %d features for %d samples of dim %d", ErrInvalid, len(x), len(y), dim)
	}
	for i, l := range y {
		if l < 0 || l >= classes {
			return nil, fmt.Errorf("%w: sample %d: label %d outside [0,%d)", ErrInvalid, i, l, classes)
		}
	}
	return &Dataset{X: x, Y: y, Shape: []int{dim}, NumFeat: dim, NumClass: classes}, nil
}

// Len returns the number of samples.
func (d *Dataset) Len() int { return len(d.Y) }

// Dim returns the number of features per sample.
func (d *Dataset) Dim() int { return d.NumFeat }

// Classes returns the number of label values.
func (d *Dataset) Classes() int { return d.NumClass }

// Sample returns the features (a view into X) and label of sample i.
func (d *Dataset) Sample(i int) ([]float32, int) {
	return d.X[i*d.NumFeat : (i+1)*d.NumFeat], d.Y[i]
}

// Subset returns a view of the samples of src at the given indices, in that
// order, without copying features. Indices must lie in [0, src.Len()).
func Subset(src Source, idx []int) (*View, error) {
	n := src.Len()
	for _, i := range idx {
		if i < 0 || i >= n {
			return nil, fmt.Errorf("subset: index %d outside [0,%d): %w", i, n, ErrInvalid)
		}
	}
	return &View{src: src, idx: idx}, nil
}

// View is an index view of another Source, as built by Subset.
type View struct {
	src Source
	idx []int
}

// Len returns the number of samples in the view.
func (v *View) Len() int { return len(v.idx) }

// Dim returns the feature dimension of the underlying source.
func (v *View) Dim() int { return v.src.Dim() }

// Classes returns the number of classes of the underlying source.
func (v *View) Classes() int { return v.src.Classes() }

// Sample returns sample i of the view.
func (v *View) Sample(i int) ([]float32, int) { return v.src.Sample(v.idx[i]) }

// Indices returns the indices into the underlying source (not a copy).
func (v *View) Indices() []int { return v.idx }
