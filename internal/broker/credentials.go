package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/fedge-dev/fedge/internal/topics"
)

// Device secrets are 256-bit random values issued by the coordinator, so the
// broker stores them as salted SHA-256 rather than with a slow password KDF:
// a KDF exists to make guessing low-entropy human passwords expensive, and
// nobody can enumerate 2^256 secrets however fast the hash is. A fast hash
// keeps 10,000 device (re)connections cheap (about a microsecond each instead
// of tens of milliseconds with bcrypt/argon2). To keep that argument true,
// secrets shorter than MinSecretLen bytes are refused. Comparison is
// constant-time.

// SecretLen is the length of secrets made by GenerateSecret.
const SecretLen = 32

// MinSecretLen is the shortest secret Credentials accepts (128 bits).
const MinSecretLen = 16

// Errors returned by Credentials.
var (
	ErrWeakSecret   = errors.New("secret too short")
	ErrBadSecret    = errors.New("malformed secret")
	ErrBadIdentity  = errors.New("invalid identity")
	ErrBadHashValue = errors.New("malformed secret hash")
)

// GenerateSecret returns a new random device secret and its printable form,
// which the device sends as its MQTT password.
func GenerateSecret() ([]byte, string, error) {
	s := make([]byte, SecretLen)
	if _, err := rand.Read(s); err != nil {
		return nil, "", fmt.Errorf("generate secret: %w", err)
	}
	return s, EncodeSecret(s), nil
}

// EncodeSecret is the printable (MQTT password) form of a secret: unpadded
// URL-safe base64.
func EncodeSecret(secret []byte) string { return base64.RawURLEncoding.EncodeToString(secret) }

// DecodeSecret parses the printable form made by EncodeSecret. Decoding is
// strict, so each secret has exactly one printable form.
func DecodeSecret(password string) ([]byte, error) {
	s, err := base64.RawURLEncoding.Strict().DecodeString(password)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSecret, err)
	}
	return s, nil
}

// SecretHash is what the broker keeps of a secret. Its String form can be
// stored (for example in the coordinator's device registry) and read back
// with ParseSecretHash.
type SecretHash struct {
	salt [16]byte
	sum  [32]byte
}

// HashSecret salts and hashes a secret of at least MinSecretLen bytes.
func HashSecret(secret []byte) (SecretHash, error) {
	if len(secret) < MinSecretLen {
		return SecretHash{}, fmt.Errorf("%w: %d bytes, need at least %d", ErrWeakSecret, len(secret), MinSecretLen)
	}
	var h SecretHash
	if _, err := rand.Read(h.salt[:]); err != nil {
		return SecretHash{}, fmt.Errorf("generate salt: %w", err)
	}
	h.sum = h.digest(secret)
	return h, nil
}

func (h SecretHash) digest(secret []byte) [32]byte {
	d := sha256.New()
	d.Write([]byte("fedge broker secret v1\x00"))
	d.Write(h.salt[:])
	d.Write(secret)
	var out [32]byte
	d.Sum(out[:0])
	return out
}

// Verify reports in constant time whether secret matches.
func (h SecretHash) Verify(secret []byte) bool {
	got := h.digest(secret)
	return subtle.ConstantTimeCompare(got[:], h.sum[:]) == 1
}

// String is "sha256$<salt>$<sum>" in unpadded URL-safe base64.
func (h SecretHash) String() string {
	return "sha256$" + base64.RawURLEncoding.EncodeToString(h.salt[:]) + "$" + base64.RawURLEncoding.EncodeToString(h.sum[:])
}

// ParseSecretHash parses the String form of a SecretHash.
func ParseSecretHash(s string) (SecretHash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 3 || parts[0] != "sha256" {
		return SecretHash{}, fmt.Errorf("%w: want sha256$salt$sum", ErrBadHashValue)
	}
	var h SecretHash
	salt, err1 := base64.RawURLEncoding.Strict().DecodeString(parts[1])
	sum, err2 := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(salt) != len(h.salt) || len(sum) != len(h.sum) {
		return SecretHash{}, fmt.Errorf("%w: bad salt or sum encoding", ErrBadHashValue)
	}
	copy(h.salt[:], salt)
	copy(h.sum[:], sum)
	return h, nil
}

// Credentials maps usernames (and client-certificate common names) to
// identities. It is safe for concurrent use; changes apply to new
// connections at once and to connected clients at their next publish or
// subscribe (a removed user is denied everything).
type Credentials struct {
	mu    sync.RWMutex
	users map[string]credential
}

type credential struct {
	hash      SecretHash
	hasSecret bool // false: certificate only
	id        topics.Identity
}

// NewCredentials returns an empty set: nobody may connect.
func NewCredentials() *Credentials { return &Credentials{users: map[string]credential{}} }

// Add lets username connect with secret (sent as EncodeSecret(secret)) as
// identity id, replacing any earlier entry. Only a salted hash of the secret
// is kept. A device's username must be its device id.
func (c *Credentials) Add(username string, secret []byte, id topics.Identity) error {
	h, err := HashSecret(secret)
	if err != nil {
		return fmt.Errorf("add %q: %w", username, err)
	}
	return c.AddHashed(username, h, id)
}

// AddHashed is Add with a hash made earlier by HashSecret.
func (c *Credentials) AddHashed(username string, h SecretHash, id topics.Identity) error {
	return c.put(username, credential{hash: h, hasSecret: true, id: id})
}

// AddCert lets a client whose verified TLS certificate has common name cn
// connect as id without a password (on a listener that verifies client
// certificates). Entries made by Add also accept certificate login.
func (c *Credentials) AddCert(cn string, id topics.Identity) error {
	return c.put(cn, credential{id: id})
}

func (c *Credentials) put(username string, cr credential) error {
	if err := validateIdentity(username, cr.id); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users[username] = cr
	return nil
}

func validateIdentity(username string, id topics.Identity) error {
	if err := topics.ValidateID(username); err != nil {
		return fmt.Errorf("%w: username: %w", ErrBadIdentity, err)
	}
	if err := topics.ValidateID(id.Fleet); err != nil {
		return fmt.Errorf("%w: fleet of %q: %w", ErrBadIdentity, username, err)
	}
	switch id.Role {
	case topics.RoleCoordinator:
	case topics.RoleDevice:
		if id.ID != username {
			return fmt.Errorf("%w: device username %q must equal its device id %q", ErrBadIdentity, username, id.ID)
		}
	default:
		return fmt.Errorf("%w: unknown role %d for %q", ErrBadIdentity, id.Role, username)
	}
	return nil
}

// Remove deletes username; it is a no-op for unknown names.
func (c *Credentials) Remove(username string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.users, username)
}

// Len returns the number of entries.
func (c *Credentials) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.users)
}

func (c *Credentials) lookup(username string) (credential, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	cr, ok := c.users[username]
	return cr, ok
}

// Lookup returns the identity of username.
func (c *Credentials) Lookup(username string) (topics.Identity, bool) {
	cr, ok := c.lookup(username)
	return cr.id, ok
}

// verifyPassword checks an MQTT password against the entry of username.
func (c *Credentials) verifyPassword(username string, password []byte) (topics.Identity, error) {
	cr, ok := c.lookup(username)
	if !ok {
		return topics.Identity{}, errors.New("unknown username")
	}
	if !cr.hasSecret {
		return topics.Identity{}, errors.New("username allows certificate login only")
	}
	secret, err := DecodeSecret(string(password))
	if err != nil {
		return topics.Identity{}, err
	}
	if !cr.hash.Verify(secret) {
		return topics.Identity{}, errors.New("wrong password")
	}
	return cr.id, nil
}
