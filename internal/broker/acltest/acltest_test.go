package acltest

import (
	"testing"

	"github.com/fedge-dev/fedge/internal/topics"
)

// TestTableAgreesWithPolicy pins the table to topics.Allowed, so a policy
// change has to update the table (and with it every broker's ACL).
func TestTableAgreesWithPolicy(t *testing.T) {
	for _, c := range Cases() {
		id := Identity(c.User)
		if id.Role == 0 {
			t.Fatalf("%s: unknown user %q", c.Name, c.User)
		}
		if got := topics.Allowed(id, c.Action, c.Topic); got != c.Allowed {
			t.Errorf("%s: Allowed(%s, %d, %q) = %v, table says %v", c.Name, c.User, c.Action, c.Topic, got, c.Allowed)
		}
		if c.Action != topics.Subscribe {
			continue
		}
		if c.Probe == "" || !Matches(c.Topic, c.Probe) {
			t.Errorf("%s: probe %q does not match filter %q", c.Name, c.Probe, c.Topic)
		}
		if !topics.Allowed(Identity(Observer(c.ProbeFleet)), topics.Publish, c.Probe) {
			t.Errorf("%s: observer of %s may not publish probe %q", c.Name, c.ProbeFleet, c.Probe)
		}
		if topics.Allowed(id, topics.Subscribe, c.Probe) != c.Allowed {
			t.Errorf("%s: reading the probe %q is not %v for %s", c.Name, c.Probe, c.Allowed, c.User)
		}
	}
	for _, c := range WillCases() {
		if got := topics.Allowed(Identity(c.User), topics.Publish, c.Topic); got != c.Allowed {
			t.Errorf("%s: Allowed = %v, table says %v", c.Name, got, c.Allowed)
		}
	}
}

func TestMatches(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"a/+/c", "a/x/c", true},
		{"a/+/c", "a/x/d", false},
		{"a/b/c", "a/b", false},
		{"+", "", true},
		{"a/#/b", "a/x/b", false},
	}
	for _, tc := range tests {
		if got := Matches(tc.filter, tc.topic); got != tc.want {
			t.Errorf("Matches(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}
