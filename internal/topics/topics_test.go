package topics

import (
	"errors"
	"testing"
)

func TestAllowed(t *testing.T) {
	dev := Identity{Role: RoleDevice, ID: "d1", Fleet: "f"}
	coord := Identity{Role: RoleCoordinator, Fleet: "f"}
	cases := []struct {
		name  string
		id    Identity
		act   Action
		topic string
		want  bool
	}{
		{"device publishes own update", dev, Publish, "fedge/v1/f/dev/d1/out/update", true},
		{"device publishes own blob chunk", dev, Publish, "fedge/v1/f/dev/d1/out/blob/ab/3", true},
		{"device publishes under another id", dev, Publish, "fedge/v1/f/dev/d2/out/update", false},
		{"device publishes to own inbox", dev, Publish, "fedge/v1/f/dev/d1/in/task", false},
		{"device publishes global manifest", dev, Publish, "fedge/v1/f/global/manifest", false},
		{"device publishes a wildcard", dev, Publish, "fedge/v1/f/dev/d1/out/#", false},
		{"device publishes bare out", dev, Publish, "fedge/v1/f/dev/d1/out/", false},
		{"device publishes other fleet", dev, Publish, "fedge/v1/g/dev/d1/out/update", false},
		{"device reads own inbox", dev, Subscribe, "fedge/v1/f/dev/d1/in/#", true},
		{"device reads own task", dev, Subscribe, "fedge/v1/f/dev/d1/in/task", true},
		{"device reads global", dev, Subscribe, "fedge/v1/f/global/#", true},
		{"device reads manifest", dev, Subscribe, "fedge/v1/f/global/manifest", true},
		{"device reads other device out", dev, Subscribe, "fedge/v1/f/dev/d2/out/update", false},
		{"device reads all device out", dev, Subscribe, "fedge/v1/f/dev/+/out/#", false},
		{"device reads own out", dev, Subscribe, "fedge/v1/f/dev/d1/out/#", false},
		{"device reads fleet", dev, Subscribe, "fedge/v1/f/#", false},
		{"device reads everything", dev, Subscribe, "#", false},
		{"coordinator reads all device out", coord, Subscribe, "fedge/v1/f/dev/+/out/#", true},
		{"coordinator publishes manifest", coord, Publish, "fedge/v1/f/global/manifest", true},
		{"coordinator other fleet", coord, Publish, "fedge/v1/g/global/manifest", false},
		{"coordinator outside fedge", coord, Subscribe, "#", false},
		{"device with bad id", Identity{Role: RoleDevice, ID: "+", Fleet: "f"}, Subscribe, "fedge/v1/f/dev/+/in/#", false},
		{"no role", Identity{ID: "x", Fleet: "f"}, Subscribe, "fedge/v1/f/global/#", false},
	}
	for _, c := range cases {
		if got := Allowed(c.id, c.act, c.topic); got != c.want {
			t.Errorf("%s: Allowed(%q) = %v, want %v", c.name, c.topic, got, c.want)
		}
	}
}

func TestBuildersAgreeWithParse(t *testing.T) {
	p, err := Parse(DeviceOut("f", "d1", KindUpdate))
	if err != nil || p.Fleet != "f" || p.Device != "d1" || p.Direction != "out" || p.Kind != KindUpdate {
		t.Fatalf("Parse(DeviceOut) = %+v, %v", p, err)
	}
	p, err = Parse(GlobalBlob("f", "abc") + "/7")
	if err != nil || p.Direction != "global" || p.Kind != "blob" || len(p.Rest) != 2 || p.Rest[1] != "7" {
		t.Fatalf("Parse(GlobalBlob) = %+v, %v", p, err)
	}
	for _, bad := range []string{"", "fedge/v2/f/global/x", "fedge/v1/f/dev/d1", "fedge/v1/f/dev/d1/sideways/x", "fedge/v1/f//x/y", "fedge/v1/f/dev/+/out/x", "other/v1/f/global/x"} {
		if _, err := Parse(bad); !errors.Is(err, ErrNotFedge) {
			t.Errorf("Parse(%q) error = %v, want ErrNotFedge", bad, err)
		}
	}
}

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"d1", "edge-007", "veh.42_a"} {
		if err := ValidateID(ok); err != nil {
			t.Errorf("ValidateID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a+b", "#", "é", string(make([]byte, 65))} {
		if err := ValidateID(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ValidateID(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
}
