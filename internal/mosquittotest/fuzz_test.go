package mosquittotest

import (
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/internal/topics"
)

// FuzzACLFile: whatever account data ACLFile accepts, the file it writes
// has exactly one block for that user and only grants topics under the
// user's own fleet root; nothing in a name or id can inject ACL lines.
func FuzzACLFile(f *testing.F) {
	seeds := []struct {
		name, id, fleet, password string
		role                      int
	}{
		{"dev-a", "dev-a", "fleet1", "pw", int(topics.RoleDevice)},
		{"coordinator", "", "fleet1", "pw", int(topics.RoleCoordinator)},
		{"dev a", "dev-a", "fleet1", "pw", int(topics.RoleDevice)},
		{"dev-a\ntopic readwrite #", "dev-a", "fleet1", "pw", int(topics.RoleDevice)},
		{"dev-a", "+", "fleet1", "pw", int(topics.RoleDevice)},
		{"dev-a", "dev-a", "#", "pw", int(topics.RoleDevice)},
		{"dev-a", "dev-a", "fleet1", "a:b", int(topics.RoleDevice)},
		{"x", "x", "f", "", 0},
		{"..", "..", "f", "p", int(topics.RoleDevice)},
	}
	for _, s := range seeds {
		f.Add(s.name, s.id, s.fleet, s.password, s.role)
	}
	f.Fuzz(func(t *testing.T, name, id, fleet, password string, role int) {
		u := User{Name: name, Password: password, Identity: topics.Identity{Role: topics.Role(role), ID: id, Fleet: fleet}}
		file, err := ACLFile([]User{u})
		if err != nil {
			return
		}
		m := parseACL(t, file)
		if len(m) != 1 || len(m[name]) == 0 {
			t.Fatalf("ACL for %q has blocks %v", name, m)
		}
		root := topics.FleetRoot(fleet) + "/"
		for _, e := range m[name] {
			if !strings.HasPrefix(e.topic, root) {
				t.Fatalf("entry %+v escapes fleet root %q", e, root)
			}
			if strings.Count(e.topic, "#") > 1 || strings.Contains(e.topic[len(root):], "%") {
				t.Fatalf("entry %+v has unexpected wildcards or substitutions", e)
			}
		}
	})
}
