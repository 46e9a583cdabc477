// Package mosquitto generates what an external Mosquitto 2.0 broker needs
// to enforce fedge's broker policy: an acl_file rendered from
// topics.Allowed, password file entries in Mosquitto's own PBKDF2-SHA512
// format, and a mosquitto.conf with one TLS listener, per-user client ids
// (use_username_as_clientid, so no account can take over another's client
// id) and the size and queue limits.
//
// What Mosquitto 2.0 cannot express, and the embedded broker enforces:
// its acl_file and password file do not see the retain flag (retain_available
// is global, and the coordinator needs retained messages), so a device can
// retain messages on the topics it may write; and it has no per-client
// publish rate limit. The configuration bounds the damage instead: every
// message is at most message_size_limit bytes, every client's queue at most
// max_queued_messages and max_queued_bytes, and the whole broker at most
// memory_limit bytes (see Options).
package mosquitto

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/fedge-dev/fedge/internal/topics"
)

// Account is a broker account.
type Account struct {
	Name     string // MQTT user name; for devices the device id
	Identity topics.Identity
}

// ErrAccount wraps every invalid account.
var ErrAccount = errors.New("invalid broker account")

// Validate checks what the password file, the ACL file and the policy need
// from an account: ids usable in topics, a device named by its device id
// and not colliding with a service identity (topics.ValidateDeviceID).
func (a Account) Validate() error {
	if err := topics.ValidateID(a.Name); err != nil {
		return fmt.Errorf("%w: user name: %w", ErrAccount, err)
	}
	id := a.Identity
	if err := topics.ValidateID(id.Fleet); err != nil {
		return fmt.Errorf("%w: user %q fleet: %w", ErrAccount, a.Name, err)
	}
	switch id.Role {
	case topics.RoleCoordinator:
	case topics.RoleDevice:
		if err := topics.ValidateDeviceID(id.ID); err != nil {
			return fmt.Errorf("%w: user %q device id: %w", ErrAccount, a.Name, err)
		}
		if id.ID != a.Name {
			return fmt.Errorf("%w: device user %q must be named by its device id %q", ErrAccount, a.Name, id.ID)
		}
	default:
		return fmt.Errorf("%w: user %q: unknown role %d", ErrAccount, a.Name, id.Role)
	}
	return nil
}

// ACL renders a Mosquitto acl_file that grants every user exactly what
// topics.Allowed grants its identity. Mosquitto 2.0's acl_file checks topic
// names only (publishes as "write", deliveries as "read"; subscriptions are
// always granted and filtered per message), so the file is written in terms
// of concrete topic names:
//
//	coordinator: readwrite fedge/v1/{fleet}/+/#   (anything below the fleet root)
//	device:      write     fedge/v1/{fleet}/dev/{id}/out/+/#
//	             read      fedge/v1/{fleet}/dev/{id}/in/+/#
//	             read      fedge/v1/{fleet}/global/+/#
//	             deny      .../out/  .../in/  .../global/  (a bare trailing
//	                       slash: "+" matches an empty level, the policy
//	                       wants at least one character after the prefix)
//
// Per-user "topic" lines are used instead of %u patterns so that devices of
// several fleets can share one broker and a pattern can never apply to a
// coordinator or to a user of another fleet.
func ACL(accounts []Account) (string, error) {
	var b strings.Builder
	b.WriteString("# generated from fedge's topics.Allowed; do not edit\n")
	seen := map[string]bool{}
	for _, a := range accounts {
		if err := a.Validate(); err != nil {
			return "", err
		}
		if seen[a.Name] {
			return "", fmt.Errorf("%w: user %q listed twice", ErrAccount, a.Name)
		}
		seen[a.Name] = true
		id := a.Identity
		root := topics.FleetRoot(id.Fleet)
		fmt.Fprintf(&b, "\nuser %s\n", a.Name)
		switch id.Role {
		case topics.RoleCoordinator:
			fmt.Fprintf(&b, "topic readwrite %s/+/#\n", root)
		case topics.RoleDevice:
			own := root + "/dev/" + id.ID
			fmt.Fprintf(&b, "topic deny %s/out/\n", own)
			fmt.Fprintf(&b, "topic deny %s/in/\n", own)
			fmt.Fprintf(&b, "topic deny %s/global/\n", root)
			fmt.Fprintf(&b, "topic write %s/out/+/#\n", own)
			fmt.Fprintf(&b, "topic read %s/in/+/#\n", own)
			fmt.Fprintf(&b, "topic read %s/global/+/#\n", root)
		}
	}
	return b.String(), nil
}

// Mosquitto 2.0's password hash: PBKDF2-SHA512, 101 iterations, a 12-byte
// salt and a 64-byte key, written "$7$101$<salt>$<key>" in padded base64
// (what mosquitto_passwd writes).
const (
	hashIterations = 101
	saltLen        = 12
	keyLen         = 64
)

// HashPassword returns the password file hash of password.
func HashPassword(password string) (string, error) {
	if err := checkPassword(password); err != nil {
		return "", err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	return hashWithSalt(password, salt, hashIterations)
}

func hashWithSalt(password string, salt []byte, iter int) (string, error) {
	key, err := pbkdf2.Key(sha512.New, password, salt, iter, keyLen)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	enc := base64.StdEncoding
	return fmt.Sprintf("$7$%d$%s$%s", iter, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches a "$7$" hash.
func VerifyPassword(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "7" {
		return false, fmt.Errorf("%w: password hash is not Mosquitto's $7$ format", ErrAccount)
	}
	var iter int
	if _, err := fmt.Sscanf(parts[2], "%d", &iter); err != nil || iter < 1 || iter > 1<<24 {
		return false, fmt.Errorf("%w: password hash iterations %q", ErrAccount, parts[2])
	}
	salt, err := base64.StdEncoding.Strict().DecodeString(parts[3])
	if err != nil || len(salt) == 0 {
		return false, fmt.Errorf("%w: password hash salt", ErrAccount)
	}
	got, err := hashWithSalt(password, salt, iter)
	if err != nil {
		return false, err
	}
	return got == hash, nil
}

func checkPassword(p string) error {
	if len(p) < 16 {
		return fmt.Errorf("%w: password of %d characters, need at least 16", ErrAccount, len(p))
	}
	if strings.ContainsAny(p, ":\n\r") {
		return fmt.Errorf("%w: password may not contain ':' or line breaks (Mosquitto password file)", ErrAccount)
	}
	return nil
}

// PasswordLine is one password file line, "name:hash\n".
func PasswordLine(name, hash string) (string, error) {
	if err := topics.ValidateID(name); err != nil {
		return "", fmt.Errorf("%w: user name: %w", ErrAccount, err)
	}
	if _, err := VerifyPassword(hash, "x"); err != nil {
		return "", err
	}
	return name + ":" + hash + "\n", nil
}
