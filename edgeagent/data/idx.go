package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// IDX type codes (the third byte of the magic number).
const idxUint8 = 0x08

// MaxIDXBytes bounds the payload an IDX decoder accepts (256 MiB), so a
// hostile header cannot make it allocate without limit.
const MaxIDXBytes = 256 << 20

// IDX is a decoded IDX array of unsigned bytes: Dims[0] items, each of the
// remaining dimensions.
type IDX struct {
	Dims []int
	Data []byte
}

// DecodeIDX reads one unsigned-byte IDX array (MNIST's format), gzipped or
// raw: magic 0x0000 08 NDIMS, NDIMS big-endian uint32 sizes, then the bytes.
// It rejects other element types, zero or absurd dimensions, payloads over
// MaxIDXBytes, truncated payloads and trailing bytes.
func DecodeIDX(r io.Reader) (*IDX, error) {
	br := bufio.NewReader(r)
	if head, err := br.Peek(2); err == nil && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("idx: gzip: %w: %w", ErrInvalid, err)
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
	}
	var magic [4]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil {
		return nil, fmt.Errorf("idx: %w: truncated magic: %w", ErrInvalid, err)
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, fmt.Errorf("idx: %w: bad magic % x", ErrInvalid, magic)
	}
	if magic[2] != idxUint8 {
		return nil, fmt.Errorf("idx: %w: element type 0x%02x, only unsigned bytes (0x08) are supported", ErrInvalid, magic[2])
	}
	nd := int(magic[3])
	if nd < 1 || nd > 4 {
		return nil, fmt.Errorf("idx: %w: %d dimensions, want 1 to 4", ErrInvalid, nd)
	}
	dims := make([]int, nd)
	total := 1
	for i := range dims {
		var b [4]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, fmt.Errorf("idx: %w: truncated header: %w", ErrInvalid, err)
		}
		d := binary.BigEndian.Uint32(b[:])
		if d == 0 || uint64(d)*uint64(total) > MaxIDXBytes {
			return nil, fmt.Errorf("idx: %w: dimension %d is %d (payload limit %d bytes)", ErrInvalid, i, d, MaxIDXBytes)
		}
		dims[i] = int(d)
		total *= int(d)
	}
	payload := make([]byte, total)
	if n, err := io.ReadFull(br, payload); err != nil {
		return nil, fmt.Errorf("idx: %w: truncated: %d of %d payload bytes: %w", ErrInvalid, n, total, err)
	}
	var extra [1]byte
	if n, _ := br.Read(extra[:]); n > 0 {
		return nil, fmt.Errorf("idx: %w: trailing bytes after %d payload bytes", ErrInvalid, total)
	}
	return &IDX{Dims: dims, Data: payload}, nil
}

// FromIDX builds a dataset from an image array (N x rows x cols) and a label
// array (N) with labels in [0, classes). Pixels are scaled to [0,1].
func FromIDX(images, labels *IDX, classes int) (*Dataset, error) {
	if len(images.Dims) < 2 {
		return nil, fmt.Errorf("idx images: %w: %d dimensions, want at least 2", ErrInvalid, len(images.Dims))
	}
	if len(labels.Dims) != 1 {
		return nil, fmt.Errorf("idx labels: %w: %d dimensions, want 1", ErrInvalid, len(labels.Dims))
	}
	n := images.Dims[0]
	if labels.Dims[0] != n {
		return nil, fmt.Errorf("idx: %w: %d images but %d labels", ErrInvalid, n, labels.Dims[0])
	}
	dim := len(images.Data) / n
	x := make([]float32, len(images.Data))
	for i, p := range images.Data {
		x[i] = float32(p) / 255
	}
	y := make([]int, n)
	for i, l := range labels.Data {
		y[i] = int(l)
	}
	ds, err := NewDataset(x, y, dim, classes)
	if err != nil {
		return nil, fmt.Errorf("idx: %w", err)
	}
	ds.Shape = append([]int(nil), images.Dims[1:]...)
	if len(ds.Shape) == 2 {
		ds.Shape = append(ds.Shape, 1)
	}
	return ds, nil
}

// MNIST file names as distributed (gzipped).
const (
	MNISTTrainImages = "train-images-idx3-ubyte.gz"
	MNISTTrainLabels = "train-labels-idx1-ubyte.gz"
	MNISTTestImages  = "t10k-images-idx3-ubyte.gz"
	MNISTTestLabels  = "t10k-labels-idx1-ubyte.gz"
)

// LoadMNIST reads the MNIST training and test sets from dir (file names as
// in the constants above; the ungzipped names without ".gz" also work) and
// checks they are 28x28 images with labels 0-9.
func LoadMNIST(dir string) (train, test *Dataset, err error) {
	if train, err = loadMNISTPair(dir, MNISTTrainImages, MNISTTrainLabels); err != nil {
		return nil, nil, err
	}
	if test, err = loadMNISTPair(dir, MNISTTestImages, MNISTTestLabels); err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

func loadMNISTPair(dir, images, labels string) (*Dataset, error) {
	img, err := readIDXFile(dir, images)
	if err != nil {
		return nil, err
	}
	if len(img.Dims) != 3 || img.Dims[1] != 28 || img.Dims[2] != 28 {
		return nil, fmt.Errorf("mnist %s: %w: shape %v, want N x 28 x 28", images, ErrInvalid, img.Dims)
	}
	lab, err := readIDXFile(dir, labels)
	if err != nil {
		return nil, err
	}
	ds, err := FromIDX(img, lab, 10)
	if err != nil {
		return nil, fmt.Errorf("mnist %s: %w", images, err)
	}
	return ds, nil
}

func readIDXFile(dir, name string) (*IDX, error) {
	path := filepath.Join(dir, name)
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		path = filepath.Join(dir, name[:len(name)-len(".gz")])
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("mnist: %w", err)
	}
	idx, err := DecodeIDX(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return idx, nil
}
