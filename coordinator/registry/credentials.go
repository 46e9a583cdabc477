package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"

	"github.com/fedge-dev/fedge/internal/atomicfile"
	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/topics"
)

// CredentialFile keeps the broker credentials the coordinator issued
// (device passwords, as salted hashes only) in a 0600 JSON file, so the
// embedded broker gets them back after a restart. It is safe for
// concurrent use.
type CredentialFile struct {
	path string

	mu    sync.Mutex
	users map[string]credentialEntry
}

type credentialEntry struct {
	Hash   string `json:"hash"`
	Device string `json:"device,omitempty"` // empty: coordinator role
}

type credentialDoc struct {
	Users map[string]credentialEntry `json:"users"`
}

// maxCredentialFile bounds the file read at startup.
const maxCredentialFile = 64 << 20

// OpenCredentialFile reads path, or starts empty if it does not exist.
func OpenCredentialFile(path string) (*CredentialFile, error) {
	c := &CredentialFile{path: path, users: map[string]credentialEntry{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	users, err := parseCredentials(raw)
	if err != nil {
		return nil, fmt.Errorf("read credentials %s: %w", path, err)
	}
	c.users = users
	return c, nil
}

// parseCredentials decodes and validates a credentials file.
func parseCredentials(raw []byte) (map[string]credentialEntry, error) {
	if len(raw) > maxCredentialFile {
		return nil, fmt.Errorf("%d bytes is too large", len(raw))
	}
	var doc credentialDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	users := map[string]credentialEntry{}
	for u, e := range doc.Users {
		if err := topics.ValidateID(u); err != nil {
			return nil, fmt.Errorf("user: %w", err)
		}
		if _, err := broker.ParseSecretHash(e.Hash); err != nil {
			return nil, fmt.Errorf("user %q: %w", u, err)
		}
		if e.Device != "" && e.Device != u {
			return nil, fmt.Errorf("user %q is device %q (must match)", u, e.Device)
		}
		users[u] = e
	}
	return users, nil
}

// IssueDevice generates a new broker password for device id, stores its
// hash (replacing an earlier one) and returns the password.
func (c *CredentialFile) IssueDevice(id string) (string, broker.SecretHash, error) {
	if err := topics.ValidateID(id); err != nil {
		return "", broker.SecretHash{}, fmt.Errorf("issue credentials: %w", err)
	}
	secret, password, err := broker.GenerateSecret()
	if err != nil {
		return "", broker.SecretHash{}, err
	}
	h, err := broker.HashSecret(secret)
	if err != nil {
		return "", broker.SecretHash{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old, had := c.users[id]
	c.users[id] = credentialEntry{Hash: h.String(), Device: id}
	if err := c.saveLocked(); err != nil {
		if had {
			c.users[id] = old
		} else {
			delete(c.users, id)
		}
		return "", broker.SecretHash{}, err
	}
	return password, h, nil
}

// Install adds every stored credential to a broker's credentials.
func (c *CredentialFile) Install(creds *broker.Credentials, fleet string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for u, e := range c.users {
		h, err := broker.ParseSecretHash(e.Hash)
		if err != nil {
			return fmt.Errorf("credential %q: %w", u, err)
		}
		id := topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}
		if e.Device != "" {
			id = topics.Identity{Role: topics.RoleDevice, ID: e.Device, Fleet: fleet}
		}
		if err := creds.AddHashed(u, h, id); err != nil {
			return fmt.Errorf("credential %q: %w", u, err)
		}
	}
	return nil
}

// Users lists the usernames, sorted.
func (c *CredentialFile) Users() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.users))
	for u := range c.users {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// saveLocked writes the file atomically (temp file, fsync, rename).
func (c *CredentialFile) saveLocked() error {
	raw, err := json.MarshalIndent(credentialDoc{Users: c.users}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode credentials: %w", err)
	}
	return atomicfile.Write(c.path, raw, 0o600)
}
