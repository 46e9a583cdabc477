package acltest

import (
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/internal/topics"
)

// FuzzAllowedFilterSoundness checks topics.Allowed against the naive MQTT
// matcher: when an identity may subscribe to a filter, it may also read
// every topic name that filter matches (brokers rely on this: Mosquitto
// checks reads per message, the embedded broker checks deliveries), and a
// device may publish only under its own out/ prefix.
//
// Two gaps are tolerated because fedge never publishes to such names:
// topic names with an empty level ("a//b", "a/"), and a filter "x/#"
// matching its parent "x". Allowed refuses to read both by name although
// a filter it allows matches them (Mosquitto's "x/#" ACL allows them).
func FuzzAllowedFilterSoundness(f *testing.F) {
	for _, c := range Cases() {
		f.Add(c.User, c.Topic, c.Probe)
		f.Add(c.User, c.Topic, c.Topic)
	}
	f.Add("dev-a", topics.DeviceInAll(Fleet, "dev-a"), topics.DeviceIn(Fleet, "dev-a", "x/y"))
	f.Add("dev-a", topics.GlobalAll(Fleet), topics.FleetRoot(Fleet)+"/global")
	f.Fuzz(func(t *testing.T, user, filter, name string) {
		id := Identity(user)
		if id.Role == 0 || strings.ContainsAny(name, "+#") || hasEmptyLevel(name) {
			return
		}
		if topics.Allowed(id, topics.Subscribe, filter) && Matches(filter, name) &&
			name != strings.TrimSuffix(filter, "/#") && !topics.Allowed(id, topics.Subscribe, name) {
			t.Fatalf("%s may subscribe %q, which matches %q, but may not read %q", user, filter, name, name)
		}
		if id.Role == topics.RoleDevice && topics.Allowed(id, topics.Publish, name) &&
			!strings.HasPrefix(name, topics.FleetRoot(id.Fleet)+"/dev/"+id.ID+"/out/") {
			t.Fatalf("device %s may publish %q outside its out/ prefix", user, name)
		}
	})
}

func hasEmptyLevel(name string) bool {
	return name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//")
}
