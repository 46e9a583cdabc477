package wiretest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/internal/wire"
)

// TestDeterministic: the table is the same bytes on every call (fuzz seeds
// and golden uses depend on it), and callers get their own copies.
func TestDeterministic(t *testing.T) {
	a, b := Cases(), Cases()
	if len(a) != len(b) {
		t.Fatalf("%d vs %d cases", len(a), len(b))
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Topic != b[i].Topic || a[i].Reason != b[i].Reason || !bytes.Equal(a[i].Raw, b[i].Raw) {
			t.Fatalf("case %d (%s) differs between calls", i, a[i].Name)
		}
	}
	if len(a[0].Raw) > 0 {
		a[0].Raw[0] ^= 0xff
		if bytes.Equal(a[0].Raw, Cases()[0].Raw) {
			t.Fatalf("Cases shares byte slices between calls")
		}
	}
	m1, m2 := Manifests(), Manifests()
	for i := range m1 {
		if !bytes.Equal(m1[i].Raw, m2[i].Raw) {
			t.Fatalf("manifest case %s differs between calls", m1[i].Name)
		}
	}
}

// TestCoverage: one "good" case per payload type (more good variants may
// follow under other names), unique names, and every good case really is
// good under the table's own keys and limits.
func TestCoverage(t *testing.T) {
	names := map[string]bool{}
	good := 0
	for _, c := range Cases() {
		if names[c.Name] {
			t.Fatalf("duplicate name %q", c.Name)
		}
		names[c.Name] = true
		if c.Reason == wire.ReasonNone {
			if strings.HasPrefix(c.Name, "good ") {
				good++
			}
			if _, err := wire.Accept(c.Topic, c.Raw, Limits(), Keys()); err != nil {
				t.Errorf("good case %q rejected: %v", c.Name, err)
			}
		}
	}
	if good != len(PayloadTypes()) {
		t.Fatalf("%d good cases for %d payload types", good, len(PayloadTypes()))
	}
	if Find("garbage").Reason != wire.ReasonMalformed {
		t.Fatalf("Find returned the wrong case")
	}
}
