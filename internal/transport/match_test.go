package transport

import (
	"errors"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b/c", "a/b/c", true},
		{"a/b/c", "a/b", false},
		{"a/b", "a/b/c", false},
		{"a/+/c", "a/x/c", true},
		{"a/+/c", "a/x/y/c", false},
		{"a/+", "a/", true},
		{"+/+", "/x", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c/d", true},
		{"a/#", "ab", false},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"fedge/v1/f/dev/+/out/#", "fedge/v1/f/dev/d1/out/status", true},
		{"fedge/v1/f/dev/+/out/#", "fedge/v1/f/dev/d1/in/task", false},
		{"a/b/+", "a/b", false},
	}
	for _, tc := range tests {
		if got := Match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	filters := []struct {
		filter string
		ok     bool
	}{
		{"a/b", true}, {"a/+/b", true}, {"#", true}, {"a/#", true}, {"+", true},
		{"", false}, {"a/#/b", false}, {"a/b#", false}, {"a+/b", false}, {"a\x00", false},
	}
	for _, tc := range filters {
		err := ValidateFilter(tc.filter)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidTopic)) {
			t.Errorf("ValidateFilter(%q) = %v, want ok=%v", tc.filter, err, tc.ok)
		}
	}
	topics := []struct {
		topic string
		ok    bool
	}{
		{"a/b", true}, {"/", true}, {"", false}, {"a/+", false}, {"a/#", false}, {"a\x00b", false},
	}
	for _, tc := range topics {
		err := ValidateTopic(tc.topic)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidTopic)) {
			t.Errorf("ValidateTopic(%q) = %v, want ok=%v", tc.topic, err, tc.ok)
		}
	}
}
