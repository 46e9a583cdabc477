package runtime

import (
	"errors"
	"strings"
	"testing"
)

const goodMeta = "fedge-model 1\nname mlp\ninput 28 28 1\nclasses 10\nparams 12\nmax_batch 4\ntensor w 0 2 5\ntensor b 10 2\n"

// metaCases is the table of good and bad metadata texts shared by the
// table test and the fuzz seeds.
var metaCases = []struct {
	name string
	in   string
	ok   bool
}{
	{"good", goodMeta, true},
	{"unknown key ignored", goodMeta + "license MIT\n", true},
	{"no trailing newline", strings.TrimSuffix(goodMeta, "\n"), true},
	{"empty", "", false},
	{"wrong version", strings.Replace(goodMeta, "fedge-model 1", "fedge-model 2", 1), false},
	{"missing name", strings.Replace(goodMeta, "name mlp\n", "", 1), false},
	{"duplicate classes", goodMeta + "classes 3\n", false},
	{"one class", strings.Replace(goodMeta, "classes 10", "classes 1", 1), false},
	{"zero dim", strings.Replace(goodMeta, "input 28 28 1", "input 28 0 1", 1), false},
	{"negative params", strings.Replace(goodMeta, "params 12", "params -12", 1), false},
	{"params mismatch", strings.Replace(goodMeta, "params 12", "params 13", 1), false},
	{"gap in tensors", strings.Replace(goodMeta, "tensor b 10 2", "tensor b 11 2", 1), false},
	{"huge tensor", strings.Replace(goodMeta, "tensor w 0 2 5", "tensor w 0 100000 100000", 1), false},
	{"overflowing dims", strings.Replace(goodMeta, "input 28 28 1", "input 4294967296 4294967296", 1), false},
	{"empty line", strings.Replace(goodMeta, "classes 10\n", "classes 10\n\n", 1), false},
	{"name with control byte", strings.Replace(goodMeta, "name mlp", "name m\x01p", 1), false},
	{"two names", strings.Replace(goodMeta, "name mlp", "name m lp", 1), false},
	{"no tensors", "fedge-model 1\nname x\ninput 1\nclasses 2\nparams 1\nmax_batch 1\n", false},
	{"text number", strings.Replace(goodMeta, "max_batch 4", "max_batch four", 1), false},
}

func TestParseMetadata(t *testing.T) {
	for _, tc := range metaCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMetadata([]byte(tc.in))
			if !tc.ok {
				if !errors.Is(err, ErrBadMetadata) {
					t.Fatalf("want ErrBadMetadata, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Name != "mlp" || m.InputLen() != 784 || m.Classes != 10 || m.Params != 12 || m.MaxBatch != 4 ||
				len(m.Tensors) != 2 || m.Tensors[1].Offset != 10 || m.Tensors[0].Size() != 10 {
				t.Fatalf("parsed %+v", m)
			}
		})
	}
}

func FuzzParseMetadata(f *testing.F) {
	for _, tc := range metaCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ParseMetadata(in)
		if err != nil {
			if !errors.Is(err, ErrBadMetadata) {
				t.Fatalf("error does not wrap ErrBadMetadata: %v", err)
			}
			return
		}
		sum := 0
		for _, tn := range m.Tensors {
			if tn.Offset != sum {
				t.Fatalf("tensor %q at %d, want %d", tn.Name, tn.Offset, sum)
			}
			sum += tn.Size()
		}
		if sum != m.Params || m.Params < 1 || m.Params > maxParams || m.Classes < 2 || m.MaxBatch < 1 ||
			m.InputLen() < 1 || m.InputLen() > maxInputLen || m.Name == "" {
			t.Fatalf("accepted inconsistent metadata %+v", m)
		}
	})
}
