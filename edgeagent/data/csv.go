package data

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// CSVOptions configures DecodeCSV.
type CSVOptions struct {
	// Classes is the number of label values; labels must lie in [0, Classes).
	Classes int
	// Header skips the first record.
	Header bool
	// MaxRows bounds the number of samples (default 1,000,000).
	MaxRows int
}

// DecodeCSV reads records "f1,...,fD,label": D float features (finite) and
// an integer label last. Every record must have the same number of fields.
// Features are used as given (no scaling).
func DecodeCSV(r io.Reader, opts CSVOptions) (*Dataset, error) {
	if opts.Classes < 2 {
		return nil, fmt.Errorf("csv: %w: classes %d, want at least 2", ErrInvalid, opts.Classes)
	}
	if opts.MaxRows <= 0 {
		opts.MaxRows = 1_000_000
	}
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = 0
	var x []float32
	var y []int
	dim := -1
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("csv: %w: %w", ErrInvalid, err)
		}
		if line == 1 && opts.Header {
			continue
		}
		if dim < 0 {
			dim = len(rec) - 1
			if dim < 1 {
				return nil, fmt.Errorf("csv line %d: %w: %d fields, want features and a label", line, ErrInvalid, len(rec))
			}
		}
		if len(y) == opts.MaxRows {
			return nil, fmt.Errorf("csv line %d: %w: more than %d rows", line, ErrInvalid, opts.MaxRows)
		}
		for i, f := range rec[:dim] {
			v, err := strconv.ParseFloat(f, 32)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("csv line %d field %d: %w: %q is not a finite number", line, i+1, ErrInvalid, f)
			}
			x = append(x, float32(v))
		}
		l, err := strconv.Atoi(rec[dim])
		if err != nil || l < 0 || l >= opts.Classes {
			return nil, fmt.Errorf("csv line %d: %w: label %q not an integer in [0,%d)", line, ErrInvalid, rec[dim], opts.Classes)
		}
		y = append(y, l)
	}
	if len(y) == 0 {
		return nil, fmt.Errorf("csv: %w: no samples", ErrInvalid)
	}
	return NewDataset(x, y, dim, opts.Classes)
}
