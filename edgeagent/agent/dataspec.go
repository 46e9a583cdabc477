package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fedge-dev/fedge/edgeagent/data"
)

// ErrBadDataSpec is wrapped by every data source specification error.
var ErrBadDataSpec = errors.New("bad data source")

// DataSpec is a parsed local data source specification:
//
//	mnist:DIR[?part=K/N]                     MNIST training set in DIR (gz or plain IDX files)
//	mnist-idx:IMAGES,LABELS[?classes=C&part=K/N]  any IDX image/label pair
//	csv:PATH[?classes=C&header=true&part=K/N]     "f1,...,fD,label" records
//
// part=K/N keeps the samples i with i mod N = K (0 <= K < N), the K-th of
// N interleaved, IID partitions.
type DataSpec struct {
	Kind    string // "mnist", "mnist-idx" or "csv"
	Paths   []string
	Classes int
	Header  bool
	Part    int
	Parts   int // 0: the whole set
}

// ParseDataSpec parses a data source specification (see DataSpec).
func ParseDataSpec(s string) (DataSpec, error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return DataSpec{}, fmt.Errorf("%w %q: want mnist:DIR, mnist-idx:IMAGES,LABELS or csv:PATH", ErrBadDataSpec, s)
	}
	path, query, _ := strings.Cut(rest, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return DataSpec{}, fmt.Errorf("%w %q: options: %v", ErrBadDataSpec, s, err)
	}
	d := DataSpec{Kind: kind}
	allowed := map[string]bool{"part": true}
	switch kind {
	case "mnist":
		d.Paths, d.Classes = []string{path}, 10
	case "mnist-idx":
		d.Paths = strings.Split(path, ",")
		if len(d.Paths) != 2 || d.Paths[0] == "" || d.Paths[1] == "" {
			return DataSpec{}, fmt.Errorf("%w %q: mnist-idx wants IMAGES,LABELS", ErrBadDataSpec, s)
		}
		d.Classes = 10
		allowed["classes"] = true
	case "csv":
		d.Paths = []string{path}
		allowed["classes"], allowed["header"] = true, true
	default:
		return DataSpec{}, fmt.Errorf("%w %q: unknown kind %q (want mnist, mnist-idx or csv)", ErrBadDataSpec, s, kind)
	}
	for k := range q {
		if !allowed[k] {
			return DataSpec{}, fmt.Errorf("%w %q: unknown option %q for %s", ErrBadDataSpec, s, k, kind)
		}
	}
	if v := q.Get("classes"); v != "" {
		if d.Classes, err = strconv.Atoi(v); err != nil || d.Classes < 2 || d.Classes > 1<<16 {
			return DataSpec{}, fmt.Errorf("%w %q: classes %q, want an integer in 2..65536", ErrBadDataSpec, s, v)
		}
	}
	if kind == "csv" && d.Classes == 0 {
		return DataSpec{}, fmt.Errorf("%w %q: csv needs classes=C", ErrBadDataSpec, s)
	}
	if q.Has("header") {
		v := q.Get("header")
		if d.Header, err = strconv.ParseBool(v); v == "" {
			d.Header, err = true, nil // "?header" alone
		}
		if err != nil {
			return DataSpec{}, fmt.Errorf("%w %q: header %q, want true or false", ErrBadDataSpec, s, v)
		}
	}
	if v := q.Get("part"); v != "" {
		ks, ns, ok := strings.Cut(v, "/")
		k, err1 := strconv.Atoi(ks)
		n, err2 := strconv.Atoi(ns)
		if !ok || err1 != nil || err2 != nil || n < 1 || n > 1<<20 || k < 0 || k >= n {
			return DataSpec{}, fmt.Errorf("%w %q: part %q, want K/N with 0 <= K < N", ErrBadDataSpec, s, v)
		}
		d.Part, d.Parts = k, n
	}
	return d, nil
}

// Load reads the data source and applies the partition. IDX sources are
// partitioned before their pixels are converted to float32, so only the
// device's share is ever held as features (a tenth of MNIST is 19 MB
// instead of 188 MB).
func (d DataSpec) Load() (data.Source, error) {
	var ds *data.Dataset
	var err error
	switch d.Kind {
	case "mnist":
		dir := d.Paths[0]
		ds, err = loadIDXPair(mnistFile(dir, data.MNISTTrainImages), mnistFile(dir, data.MNISTTrainLabels), 10, d.Part, d.Parts)
		if err == nil && (len(ds.Shape) != 3 || ds.Shape[0] != 28 || ds.Shape[1] != 28) {
			err = fmt.Errorf("%w: images of shape %v, want 28 x 28", ErrBadDataSpec, ds.Shape)
		}
	case "mnist-idx":
		ds, err = loadIDXPair(d.Paths[0], d.Paths[1], d.Classes, d.Part, d.Parts)
	case "csv":
		var raw []byte
		if raw, err = os.ReadFile(d.Paths[0]); err == nil {
			ds, err = data.DecodeCSV(bytes.NewReader(raw), data.CSVOptions{Classes: d.Classes, Header: d.Header})
		}
		if err == nil {
			ds, err = partition(ds, d.Part, d.Parts)
		}
	default:
		err = fmt.Errorf("%w: kind %q", ErrBadDataSpec, d.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s data: %w", d.Kind, err)
	}
	return ds, nil
}

// mnistFile returns dir/name, or dir/name without ".gz" when only the
// uncompressed file exists.
func mnistFile(dir, name string) string {
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		if q := strings.TrimSuffix(p, ".gz"); q != p {
			if _, err := os.Stat(q); err == nil {
				return q
			}
		}
	}
	return p
}

// partIndices lists the samples i of n with i mod parts = part.
func partIndices(n, part, parts int) ([]int, error) {
	if parts <= 1 {
		parts, part = 1, 0
	}
	var idx []int
	for i := part; i < n; i += parts {
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return nil, fmt.Errorf("part %d/%d of %d samples is empty", part, parts, n)
	}
	return idx, nil
}

// partition copies the part of ds into a compact dataset.
func partition(ds *data.Dataset, part, parts int) (*data.Dataset, error) {
	if parts <= 1 {
		return ds, nil
	}
	idx, err := partIndices(ds.Len(), part, parts)
	if err != nil {
		return nil, err
	}
	x := make([]float32, 0, len(idx)*ds.Dim())
	y := make([]int, 0, len(idx))
	for _, i := range idx {
		f, l := ds.Sample(i)
		x, y = append(x, f...), append(y, l)
	}
	out, err := data.NewDataset(x, y, ds.Dim(), ds.Classes())
	if err != nil {
		return nil, err
	}
	out.Shape = ds.Shape
	return out, nil
}

func loadIDXPair(images, labels string, classes, part, parts int) (*data.Dataset, error) {
	var idx [2]*data.IDX
	for i, p := range []string{images, labels} {
		raw, err := os.ReadFile(filepath.Clean(p))
		if err != nil {
			return nil, err
		}
		if idx[i], err = data.DecodeIDX(bytes.NewReader(raw)); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	img, lab := idx[0], idx[1]
	if parts > 1 && len(img.Dims) >= 2 && len(lab.Dims) == 1 && img.Dims[0] == lab.Dims[0] && img.Dims[0] > 0 {
		n := img.Dims[0]
		rows, err := partIndices(n, part, parts)
		if err != nil {
			return nil, err
		}
		row := len(img.Data) / n
		pi := &data.IDX{Dims: append([]int{len(rows)}, img.Dims[1:]...), Data: make([]byte, 0, len(rows)*row)}
		pl := &data.IDX{Dims: []int{len(rows)}, Data: make([]byte, 0, len(rows))}
		for _, r := range rows {
			pi.Data = append(pi.Data, img.Data[r*row:(r+1)*row]...)
			pl.Data = append(pl.Data, lab.Data[r])
		}
		img, lab = pi, pl
	}
	return data.FromIDX(img, lab, classes)
}
