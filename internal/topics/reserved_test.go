package topics

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateDeviceID(t *testing.T) {
	for _, id := range []string{"coordinator", "coordinator-default", "coordinator-fleet1", "Coordinator", "COORDINATOR-x", "coordinatorX", "coord", "c", "co"} {
		err := ValidateDeviceID(id)
		if !errors.Is(err, ErrReservedID) || !errors.Is(err, ErrInvalidID) {
			t.Errorf("ValidateDeviceID(%q) = %v, want ErrReservedID and ErrInvalidID", id, err)
		}
	}
	for _, id := range []string{"cam-17", "dev-0", "coo1", "my-coordinator", "x"} {
		if err := ValidateDeviceID(id); err != nil {
			t.Errorf("ValidateDeviceID(%q) = %v, want nil", id, err)
		}
	}
	if err := ValidateDeviceID("a/b"); !errors.Is(err, ErrInvalidID) || errors.Is(err, ErrReservedID) {
		t.Errorf("ValidateDeviceID(a/b) = %v, want ErrInvalidID only", err)
	}
	// The coordinator's own client id is reserved for every fleet.
	for _, fleet := range []string{"default", "f", "itest"} {
		if err := ValidateDeviceID(CoordinatorClientID(fleet)); !errors.Is(err, ErrReservedID) {
			t.Errorf("coordinator client id of %q accepted as a device id: %v", fleet, err)
		}
	}
}

func TestRetainAllowed(t *testing.T) {
	dev := Identity{Role: RoleDevice, ID: "d1", Fleet: "f"}
	coord := Identity{Role: RoleCoordinator, Fleet: "f"}
	hex := strings.Repeat("0a", 32)
	cases := []struct {
		name  string
		id    Identity
		topic string
		want  bool
	}{
		{"device blob descriptor", dev, "fedge/v1/f/dev/d1/out/blob/" + hex + "/desc", true},
		{"device blob chunk", dev, "fedge/v1/f/dev/d1/out/blob/" + hex + "/chunk", false},
		{"device blob request", dev, "fedge/v1/f/dev/d1/out/blob/" + hex + "/req", false},
		{"device descriptor of a non-hash id", dev, "fedge/v1/f/dev/d1/out/blob/junk/desc", false},
		{"device descriptor of an uppercase id", dev, "fedge/v1/f/dev/d1/out/blob/" + strings.ToUpper(hex) + "/desc", false},
		{"device descriptor deeper", dev, "fedge/v1/f/dev/d1/out/blob/" + hex + "/desc/x", false},
		{"device status", dev, "fedge/v1/f/dev/d1/out/status", false},
		{"device update", dev, "fedge/v1/f/dev/d1/out/update", false},
		{"device junk", dev, "fedge/v1/f/dev/d1/out/junk/1", false},
		{"device another device's descriptor", dev, "fedge/v1/f/dev/d2/out/blob/" + hex + "/desc", false},
		{"device global", dev, "fedge/v1/f/global/manifest", false},
		{"coordinator manifest", coord, "fedge/v1/f/global/manifest", true},
		{"coordinator clears a device descriptor", coord, "fedge/v1/f/dev/d1/out/blob/" + hex + "/desc", true},
		{"coordinator other fleet", coord, "fedge/v1/g/global/manifest", false},
	}
	for _, c := range cases {
		if got := RetainAllowed(c.id, c.topic); got != c.want {
			t.Errorf("%s: RetainAllowed(%s) = %v, want %v", c.name, c.topic, got, c.want)
		}
	}
}
