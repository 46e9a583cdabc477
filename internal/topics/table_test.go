package topics

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// readmeTable returns the rows of the README's "MQTT topics" table as
// (topic, direction) pairs.
func readmeTable(t *testing.T) [][2]string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(raw), "\n## MQTT topics\n")
	if !ok {
		t.Fatal("README.md has no \"## MQTT topics\" section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var rows [][2]string
	for _, line := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			t.Fatalf("README topic row %q has fewer than 3 columns", line)
		}
		rows = append(rows, [2]string{strings.Trim(strings.TrimSpace(cells[0]), "`"), strings.TrimSpace(cells[1])})
	}
	return rows
}

// TestReadmeTopicTable: the README lists exactly Scheme's topics, in order,
// with their direction and retain flag.
func TestReadmeTopicTable(t *testing.T) {
	rows := readmeTable(t)
	scheme := Scheme()
	if len(rows) != len(scheme) {
		t.Fatalf("README lists %d topics, Scheme %d:\n%v", len(rows), len(scheme), rows)
	}
	for i, e := range scheme {
		want := "coordinator to all"
		switch {
		case e.Publisher == RoleDevice:
			want = "device to coordinator"
		case e.Reader == RoleCoordinator:
			want = "coordinator to itself"
		case strings.Contains(e.Pattern, "/dev/"):
			want = "coordinator to one device"
		}
		if e.Retained {
			want += ", retained"
		}
		if rows[i][0] != e.Pattern || rows[i][1] != want {
			t.Errorf("README row %d is %q / %q, want %q / %q", i, rows[i][0], rows[i][1], e.Pattern, want)
		}
	}
}

// TestSchemeAgreesWithPolicy: every topic of the scheme is publishable by
// its publisher (and by no other device), readable by its readers (and by
// no other device unless global), and retainable by a device exactly when
// it is retained.
func TestSchemeAgreesWithPolicy(t *testing.T) {
	const fleet, device, other = "f", "d1", "d2"
	id := strings.Repeat("ab", 32)
	dev := Identity{Role: RoleDevice, ID: device, Fleet: fleet}
	otherDev := Identity{Role: RoleDevice, ID: other, Fleet: fleet}
	coord := Identity{Role: RoleCoordinator, Fleet: fleet}
	for _, e := range Scheme() {
		kinds := e.Kinds
		if len(kinds) == 0 {
			kinds = []string{""}
		}
		for _, k := range kinds {
			topic := strings.NewReplacer("{fleet}", fleet, "{device}", device, "{id}", id, "{kind}", k).Replace(e.Pattern)
			if strings.ContainsAny(topic, "{}") {
				t.Fatalf("%s: unknown placeholder in %q", e.Pattern, topic)
			}
			if _, err := Parse(topic); err != nil {
				t.Errorf("%s: %v", topic, err)
			}
			pub, reader := coord, dev
			if e.Publisher == RoleDevice || e.Reader == RoleCoordinator {
				reader = coord
			}
			if e.Publisher == RoleDevice {
				pub = dev
			}
			if !Allowed(pub, Publish, topic) || Allowed(otherDev, Publish, topic) {
				t.Errorf("%s: its publisher may not publish it, or another device may", topic)
			}
			if e.Publisher == RoleCoordinator && Allowed(dev, Publish, topic) {
				t.Errorf("%s: a device may publish a coordinator topic", topic)
			}
			if !Allowed(reader, Subscribe, topic) {
				t.Errorf("%s: %v may not read it", topic, reader.Role)
			}
			if Allowed(otherDev, Subscribe, topic) && !strings.Contains(e.Pattern, "/global/") {
				t.Errorf("%s: another device may read it", topic)
			}
			if got := RetainAllowed(pub, topic); got != e.Retained && e.Publisher == RoleDevice {
				t.Errorf("%s: RetainAllowed(device) = %v, scheme says retained = %v", topic, got, e.Retained)
			}
			if e.Retained && !RetainAllowed(pub, topic) {
				t.Errorf("%s: retained but its publisher may not retain it", topic)
			}
			if e.Retained && e.Publisher == RoleDevice && !RetainAllowed(coord, topic) {
				t.Errorf("%s: the coordinator cannot clear the device's retained message", topic)
			}
		}
	}
	// Every message kind appears in the scheme.
	var all []string
	for _, e := range Scheme() {
		all = append(all, e.Kinds...)
		if strings.Contains(e.Pattern, "/blob/") {
			all = append(all, KindBlob)
		}
	}
	for _, k := range []string{KindStatus, KindUpdate, KindTask, KindAck, KindSecAgg, KindBlob, KindEnroll, KindControl} {
		if !slices.Contains(all, k) {
			t.Errorf("kind %q missing from Scheme", k)
		}
	}
}
