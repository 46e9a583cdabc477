package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// idxBytes builds an unsigned-byte IDX file with the given dims and payload.
func idxBytes(dims []uint32, payload []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, idxUint8, byte(len(dims))})
	for _, d := range dims {
		_ = binary.Write(&b, binary.BigEndian, d)
	}
	b.Write(payload)
	return b.Bytes()
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	_, _ = w.Write(b)
	_ = w.Close()
	return out.Bytes()
}

// idxCases is the table of good and bad IDX inputs shared by the table test
// and the fuzz seeds.
var idxCases = []struct {
	name string
	in   []byte
	dims []int // nil: must fail
}{
	{"labels", idxBytes([]uint32{3}, []byte{1, 2, 9}), []int{3}},
	{"images", idxBytes([]uint32{2, 2, 2}, []byte{0, 255, 3, 4, 5, 6, 7, 8}), []int{2, 2, 2}},
	{"gzip", gz(idxBytes([]uint32{2}, []byte{4, 5})), []int{2}},
	{"empty", nil, nil},
	{"short magic", []byte{0, 0}, nil},
	{"bad magic", []byte{1, 0, 8, 1, 0, 0, 0, 1, 0}, nil},
	{"float type", []byte{0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0}, nil},
	{"zero dims", []byte{0, 0, 8, 0}, nil},
	{"five dims", []byte{0, 0, 8, 5}, nil},
	{"zero size", idxBytes([]uint32{0}, nil), nil},
	{"truncated header", []byte{0, 0, 8, 2, 0, 0, 0, 1, 0, 0}, nil},
	{"truncated payload", idxBytes([]uint32{4}, []byte{1, 2}), nil},
	{"trailing bytes", idxBytes([]uint32{1}, []byte{1, 2}), nil},
	{"huge", idxBytes([]uint32{1 << 20, 1 << 20}, nil), nil},
	{"bad gzip", []byte{0x1f, 0x8b, 0, 0}, nil},
	{"truncated gzip", gz(idxBytes([]uint32{64}, make([]byte, 64)))[:20], nil},
}

func TestDecodeIDX(t *testing.T) {
	for _, tc := range idxCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeIDX(bytes.NewReader(tc.in))
			if tc.dims == nil {
				if err == nil || !errors.Is(err, ErrInvalid) {
					t.Fatalf("want ErrInvalid, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Dims) != len(tc.dims) {
				t.Fatalf("dims %v, want %v", got.Dims, tc.dims)
			}
			n := 1
			for i, d := range tc.dims {
				if got.Dims[i] != d {
					t.Fatalf("dims %v, want %v", got.Dims, tc.dims)
				}
				n *= d
			}
			if len(got.Data) != n {
				t.Fatalf("%d payload bytes, want %d", len(got.Data), n)
			}
		})
	}
}

func FuzzDecodeIDX(f *testing.F) {
	for _, tc := range idxCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := DecodeIDX(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		n := 1
		for _, d := range got.Dims {
			if d <= 0 {
				t.Fatalf("dimension %d accepted", d)
			}
			n *= d
		}
		if n != len(got.Data) || n > MaxIDXBytes {
			t.Fatalf("dims %v but %d bytes", got.Dims, len(got.Data))
		}
	})
}

func TestFromIDX(t *testing.T) {
	img := &IDX{Dims: []int{2, 2, 2}, Data: []byte{0, 255, 51, 0, 0, 0, 0, 255}}
	cases := []struct {
		name   string
		labels *IDX
		ok     bool
	}{
		{"ok", &IDX{Dims: []int{2}, Data: []byte{1, 9}}, true},
		{"label out of range", &IDX{Dims: []int{2}, Data: []byte{1, 10}}, false},
		{"count mismatch", &IDX{Dims: []int{3}, Data: []byte{1, 2, 3}}, false},
		{"labels 2-d", &IDX{Dims: []int{2, 1}, Data: []byte{1, 2}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ds, err := FromIDX(img, tc.labels, 10)
			if !tc.ok {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("want ErrInvalid, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			x, y := ds.Sample(0)
			if ds.Len() != 2 || ds.Dim() != 4 || y != 1 || x[1] != 1 || x[2] != 0.2 {
				t.Fatalf("got len %d dim %d sample %v label %d", ds.Len(), ds.Dim(), x, y)
			}
			if len(ds.Shape) != 3 || ds.Shape[0] != 2 || ds.Shape[2] != 1 {
				t.Fatalf("shape %v", ds.Shape)
			}
		})
	}
}

// csvCases is the table of good and bad CSV inputs shared by the table test
// and the fuzz seeds.
var csvCases = []struct {
	name   string
	in     string
	header bool
	n, dim int // n == 0: must fail
}{
	{"two rows", "0.5,1,0\n2,3.25,2\n", false, 2, 2},
	{"header", "a,b,label\n1,2,1\n", true, 1, 2},
	{"crlf", "1,2,0\r\n3,4,1\r\n", false, 2, 2},
	{"empty", "", false, 0, 0},
	{"only header", "a,b,label\n", true, 0, 0},
	{"label only", "1\n", false, 0, 0},
	{"ragged", "1,2,0\n1,0\n", false, 0, 0},
	{"label out of range", "1,2,3\n", false, 0, 0},
	{"negative label", "1,2,-1\n", false, 0, 0},
	{"fractional label", "1,2,1.5\n", false, 0, 0},
	{"nan feature", "NaN,2,1\n", false, 0, 0},
	{"inf feature", "1,+Inf,1\n", false, 0, 0},
	{"text feature", "x,2,1\n", false, 0, 0},
	{"bare quote", "1,\"2,1\n", false, 0, 0},
}

func TestDecodeCSV(t *testing.T) {
	for _, tc := range csvCases {
		t.Run(tc.name, func(t *testing.T) {
			ds, err := DecodeCSV(strings.NewReader(tc.in), CSVOptions{Classes: 3, Header: tc.header})
			if tc.n == 0 {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("want ErrInvalid, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ds.Len() != tc.n || ds.Dim() != tc.dim {
				t.Fatalf("got %d rows of %d, want %d of %d", ds.Len(), ds.Dim(), tc.n, tc.dim)
			}
		})
	}
	ds, err := DecodeCSV(strings.NewReader("0.5,1,0\n2,3.25,2\n"), CSVOptions{Classes: 3})
	if err != nil {
		t.Fatal(err)
	}
	if x, y := ds.Sample(1); x[0] != 2 || x[1] != 3.25 || y != 2 {
		t.Fatalf("sample 1 = %v, %d", x, y)
	}
	if _, err := DecodeCSV(strings.NewReader("1,0\n1,1\n1,0\n"), CSVOptions{Classes: 2, MaxRows: 2}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("row limit: got %v", err)
	}
	if _, err := DecodeCSV(strings.NewReader("1,0\n"), CSVOptions{Classes: 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("one class: got %v", err)
	}
}

func FuzzDecodeCSV(f *testing.F) {
	for _, tc := range csvCases {
		f.Add(tc.in, tc.header)
	}
	f.Fuzz(func(t *testing.T, in string, header bool) {
		ds, err := DecodeCSV(strings.NewReader(in), CSVOptions{Classes: 4, Header: header, MaxRows: 1000})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if ds.Len() == 0 || len(ds.X) != ds.Len()*ds.Dim() {
			t.Fatalf("inconsistent dataset: %d rows, dim %d, %d values", ds.Len(), ds.Dim(), len(ds.X))
		}
		for i := 0; i < ds.Len(); i++ {
			if _, y := ds.Sample(i); y < 0 || y >= 4 {
				t.Fatalf("label %d accepted", y)
			}
		}
	})
}

func TestSubset(t *testing.T) {
	ds, err := NewDataset([]float32{0, 1, 2, 3, 4, 5}, []int{0, 1, 0}, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Subset(ds, []int{2, 0})
	if err != nil {
		t.Fatal(err)
	}
	if x, y := v.Sample(0); v.Len() != 2 || x[0] != 4 || y != 0 || v.Dim() != 2 || v.Classes() != 2 {
		t.Fatalf("view sample 0 = %v %d", x, y)
	}
	nested, err := Subset(v, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	if x, _ := nested.Sample(0); x[0] != 0 {
		t.Fatalf("nested view sample = %v", x)
	}
	for _, bad := range [][]int{{3}, {-1}} {
		if _, err := Subset(ds, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Subset(%v): got %v", bad, err)
		}
	}
	for _, c := range []struct {
		x       []float32
		y       []int
		dim, cl int
	}{
		{[]float32{1, 2}, []int{0}, 1, 2},
		{[]float32{1}, []int{2}, 1, 2},
		{[]float32{1}, []int{0}, 0, 2},
		{[]float32{1}, []int{0}, 1, 1},
	} {
		if _, err := NewDataset(c.x, c.y, c.dim, c.cl); !errors.Is(err, ErrInvalid) {
			t.Fatalf("NewDataset(%v,%v,%d,%d): got %v", c.x, c.y, c.dim, c.cl, err)
		}
	}
}
