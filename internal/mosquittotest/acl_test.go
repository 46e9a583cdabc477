package mosquittotest

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
)

// aclEntry and aclModel re-state Mosquitto 2.0's acl_file evaluation
// (src/security_default.c): per user, "deny" entries are checked first,
// then the others in file order; the first entry whose topic matches
// decides; no match denies. Topics starting with '$' only match entries
// starting with '$'. The live tests (TestACLTable, TestACLEdgeTopics)
// check this model against the real broker on the cases that matter.
type aclEntry struct{ access, topic string }

type aclModel map[string][]aclEntry

func parseACL(t *testing.T, file string) aclModel {
	t.Helper()
	m := aclModel{}
	user := ""
	for _, line := range strings.Split(file, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || strings.HasPrefix(f[0], "#"):
		case f[0] == "user" && len(f) == 2:
			user = f[1]
		case f[0] == "topic" && len(f) == 3 && user != "":
			e := aclEntry{f[1], f[2]}
			if e.access == "deny" {
				m[user] = append([]aclEntry{e}, m[user]...)
			} else {
				m[user] = append(m[user], e)
			}
		default:
			t.Fatalf("unexpected ACL line %q", line)
		}
	}
	return m
}

// mqttMatch is MQTT topic matching as Mosquitto does it ("a/#" matches "a").
func mqttMatch(filter, topic string) bool {
	f, n := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, s := range f {
		if s == "#" {
			return true
		}
		if i >= len(n) || (s != "+" && s != n[i]) {
			return false
		}
	}
	return len(f) == len(n)
}

func (m aclModel) allows(user, topic, access string) bool {
	for _, e := range m[user] {
		if strings.HasPrefix(topic, "$") && !strings.HasPrefix(e.topic, "$") {
			continue
		}
		if !mqttMatch(e.topic, topic) {
			continue
		}
		if e.access == "deny" {
			return false
		}
		if e.access == "readwrite" || e.access == access {
			return true
		}
	}
	return false
}

func TestMQTTMatch(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"a/+", "a/", true}, {"a/+", "a", false},
		{"a/+/#", "a/", true}, {"a/+/#", "a", false}, {"a/b", "a/b", true}, {"a/b", "a/b/", false},
	}
	for _, c := range cases {
		if got := mqttMatch(c.filter, c.topic); got != c.want {
			t.Errorf("mqttMatch(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

// randomTopic builds topics that are mostly near the fedge scheme, with
// the awkward shapes (empty levels, prefix-sharing ids, other fleets).
func randomTopic(r *rand.Rand) string {
	pool := []string{"dev", "global", "in", "out", "dev-a", "dev-b", "dev-ab", "dev-x", "status",
		"update", "manifest", "blob", "", "x", "fleet1", "fleet2", "fedge", "v1", "$SYS"}
	var seg []string
	switch r.IntN(4) {
	case 0: // anything
	case 1:
		seg = []string{"fedge", "v1", []string{"fleet1", "fleet2", "fleet3"}[r.IntN(3)]}
	default:
		seg = []string{"fedge", "v1", "fleet1", "dev", []string{"dev-a", "dev-b", "dev-ab"}[r.IntN(3)]}
	}
	for n := r.IntN(5); n >= 0; n-- {
		seg = append(seg, pool[r.IntN(len(pool))])
	}
	return strings.Join(seg, "/")
}

// TestACLFileEqualsPolicy: for every user of the shared table and many
// generated topics, the generated ACL file allows a publish ("write") and a
// delivery ("read") exactly when topics.Allowed does.
func TestACLFileEqualsPolicy(t *testing.T) {
	var users []User
	for _, u := range acltest.Users() {
		users = append(users, User{Name: u.Name, Password: "p", Identity: u.Identity})
	}
	file, err := ACLFile(users)
	if err != nil {
		t.Fatal(err)
	}
	m := parseACL(t, file)
	r := rand.New(rand.NewPCG(1, 2))
	n := 5000
	if testing.Short() {
		n = 1000
	}
	var topicsSeen []string
	for _, c := range acltest.Cases() {
		topicsSeen = append(topicsSeen, c.Topic, c.Probe)
	}
	for i := 0; i < n; i++ {
		topicsSeen = append(topicsSeen, randomTopic(r))
	}
	var allowedPub, allowedRead int
	for _, topic := range topicsSeen {
		if topic == "" || strings.ContainsAny(topic, "+#") {
			continue // not a topic name
		}
		for _, u := range users {
			pub := topics.Allowed(u.Identity, topics.Publish, topic)
			if got := m.allows(u.Name, topic, "write"); got != pub {
				t.Fatalf("%s publish %q: ACL file %v, policy %v", u.Name, topic, got, pub)
			}
			read := topics.Allowed(u.Identity, topics.Subscribe, topic)
			if got := m.allows(u.Name, topic, "read"); got != read {
				t.Fatalf("%s read %q: ACL file %v, policy %v", u.Name, topic, got, read)
			}
			if pub {
				allowedPub++
			}
			if read {
				allowedRead++
			}
		}
	}
	if allowedPub < 100 || allowedRead < 100 {
		t.Fatalf("corpus too far from the scheme: %d allowed publishes, %d allowed reads", allowedPub, allowedRead)
	}
}

func TestACLFileRejects(t *testing.T) {
	dev := topics.Identity{Role: topics.RoleDevice, ID: "d1", Fleet: "f"}
	if _, err := ACLFile([]User{{Name: "d1", Identity: dev}, {Name: "d1", Identity: dev}}); err == nil {
		t.Error("duplicate user accepted")
	}
	if _, err := ACLFile([]User{{Name: "d1", Identity: topics.Identity{Role: topics.RoleDevice, ID: "d/1", Fleet: "f"}}}); err == nil {
		t.Error("device id with a slash accepted")
	}
	if _, err := ACLFile([]User{{Name: "c", Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: "f/#"}}}); err == nil {
		t.Error("fleet with wildcard accepted")
	}
}
