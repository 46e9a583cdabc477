package logging

import (
	"bytes"
	"strings"
	"testing"
)

// levelInputs is the seed table of good and bad level flags.
var levelInputs = []struct {
	in string
	ok bool
}{
	{"debug", true}, {"INFO", true}, {"", true}, {" warn ", true}, {"warning", true}, {"error", true},
	{"fatal", false}, {"dpanic", false}, {"trace", false}, {"inf", false}, {"debug\x00", false}, {"ERROR!", false},
}

func TestParseLevelTable(t *testing.T) {
	for _, c := range levelInputs {
		_, err := ParseLevel(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseLevel(%q) error = %v, want ok %v", c.in, err, c.ok)
		}
	}
}

// FuzzParseLevel: ParseLevel and NewTo never panic, accept exactly the
// documented names, and a level's own name parses back to it.
func FuzzParseLevel(f *testing.F) {
	for _, c := range levelInputs {
		f.Add(c.in)
	}
	accepted := map[string]bool{"debug": true, "info": true, "": true, "warn": true, "warning": true, "error": true}
	f.Fuzz(func(t *testing.T, s string) {
		lvl, err := ParseLevel(s)
		want := accepted[strings.ToLower(strings.TrimSpace(s))]
		if (err == nil) != want {
			t.Fatalf("ParseLevel(%q) error = %v, want accepted %v", s, err, want)
		}
		if err != nil {
			if _, nerr := NewTo(&bytes.Buffer{}, "json", s); nerr == nil {
				t.Fatalf("NewTo accepted level %q that ParseLevel rejects", s)
			}
			return
		}
		back, err := ParseLevel(lvl.String())
		if err != nil || back != lvl {
			t.Fatalf("level %v does not round-trip: %v, %v", lvl, back, err)
		}
	})
}
