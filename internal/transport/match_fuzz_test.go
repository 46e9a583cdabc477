package transport

import (
	"strings"
	"testing"
)

// naiveMatch is a direct reading of MQTT 3.1.1 section 4.7, used as the
// reference for Match.
func naiveMatch(filter, topic string) bool {
	f := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, level := range f {
		if level == "#" {
			return true // matches the parent level and any number of children
		}
		if i >= len(tl) {
			return false
		}
		if level != "+" && level != tl[i] {
			return false
		}
	}
	return len(f) == len(tl)
}

// FuzzMatch checks topic validation and matching (topics come from the
// network) against the naive reference; it must never panic.
func FuzzMatch(f *testing.F) {
	seeds := [][2]string{
		{"a/b/c", "a/b/c"}, {"a/+/c", "a/x/c"}, {"a/#", "a"}, {"#", "$SYS/x"}, {"+/+", "/"},
		{"a/#/b", "a/x/b"}, {"a+", "a+"}, {"", ""}, {"fedge/v1/f/dev/+/out/#", "fedge/v1/f/dev/d/out/x"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if ValidateFilter(filter) != nil || ValidateTopic(topic) != nil {
			return
		}
		if got, want := Match(filter, topic), naiveMatch(filter, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", filter, topic, got, want)
		}
		if ValidateFilter(topic) != nil {
			t.Fatalf("valid topic %q is not a valid filter", topic)
		}
		if !Match(topic, topic) {
			t.Fatalf("topic %q does not match itself", topic)
		}
	})
}
