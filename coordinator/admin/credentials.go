package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fedge-dev/fedge/internal/atomicfile"
)

// Role is what an admin credential may do. Each role includes the ones
// below it.
type Role int

// Roles, weakest first.
const (
	// RoleViewer reads everything: status, runs, models, devices, audit,
	// metrics.
	RoleViewer Role = iota + 1
	// RoleOperator also starts and stops runs, rolls models back and
	// approves enrolled devices.
	RoleOperator
	// RoleAdmin also registers model modules and issues device
	// credentials.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleOperator:
		return "operator"
	case RoleAdmin:
		return "admin"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// ParseRole parses "viewer", "operator" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "viewer":
		return RoleViewer, nil
	case "operator":
		return RoleOperator, nil
	case "admin":
		return RoleAdmin, nil
	}
	return 0, fmt.Errorf("role %q: want viewer, operator or admin", s)
}

// Principal is the authenticated caller of a request.
type Principal struct {
	// Name is the credential's owner ("admin" for the shared token).
	Name string `json:"name"`
	Role Role   `json:"-"`
	// Shared is true for the coordinator's single admin token
	// (DATA/admin.token), kept for scripts written before per-admin
	// credentials.
	Shared bool `json:"shared"`
}

// CredentialsFile is the file, in the coordinator's data directory, that
// holds the per-admin credentials (hashed).
const CredentialsFile = "admins.json"

// tokenPrefix starts every per-admin token, so a leaked one is
// recognisable (secret scanners, logs).
const tokenPrefix = "fedge_adm_"

// CredentialInfo describes one per-admin credential; the token itself is
// never stored, only its SHA-256.
type CredentialInfo struct {
	Name          string `json:"name"`
	Role          string `json:"role"`
	TokenSHA256   string `json:"token_sha256"`
	CreatedUnixMs int64  `json:"created_unix_ms"`
	RevokedUnixMs int64  `json:"revoked_unix_ms,omitempty"`
}

type credentialsDoc struct {
	Credentials []CredentialInfo `json:"credentials"`
}

// Credentials are the per-admin credentials in a file. The CLI adds and
// revokes them in the file (the daemon need not run); the daemon's
// handler calls Lookup, which rereads the file when it changed, so a
// revocation takes effect on the next request.
type Credentials struct {
	path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	loaded  bool
	recs    []CredentialInfo
	byHash  map[[32]byte]int
	loadErr error
}

// OpenCredentials reads the credentials file at path; a missing file is
// an empty set.
func OpenCredentials(path string) (*Credentials, error) {
	c := &Credentials{path: path}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reloadLocked(true); err != nil {
		return nil, err
	}
	return c, nil
}

// validName: 1 to 64 characters of [A-Za-z0-9._@-], starting with a
// letter or digit (it is written into the audit log).
func validName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("admin name %q: want 1 to 64 characters", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !ok && (i == 0 || !strings.ContainsRune("._@-", c)) {
			return fmt.Errorf("admin name %q: only letters, digits and . _ @ - (not first) are allowed", name)
		}
	}
	if name == "admin" {
		return errors.New(`admin name "admin" is reserved for the shared admin token`)
	}
	return nil
}

// reloadLocked rereads the file if its size or modification time changed
// (always when force).
func (c *Credentials) reloadLocked(force bool) error {
	fi, err := os.Stat(c.path)
	if errors.Is(err, os.ErrNotExist) {
		c.recs, c.byHash, c.loaded, c.modTime, c.size = nil, map[[32]byte]int{}, true, time.Time{}, -1
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin credentials: %w", err)
	}
	if !force && c.loaded && fi.ModTime().Equal(c.modTime) && fi.Size() == c.size {
		return nil
	}
	raw, err := os.ReadFile(c.path)
	if err != nil {
		return fmt.Errorf("admin credentials: %w", err)
	}
	var doc credentialsDoc
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("admin credentials %s: %w", c.path, err)
	}
	byHash := make(map[[32]byte]int, len(doc.Credentials))
	for i, r := range doc.Credentials {
		if err := validName(r.Name); err != nil {
			return fmt.Errorf("admin credentials %s: entry %d: %w", c.path, i, err)
		}
		if _, err := ParseRole(r.Role); err != nil {
			return fmt.Errorf("admin credentials %s: %s: %w", c.path, r.Name, err)
		}
		h, err := hex.DecodeString(r.TokenSHA256)
		if err != nil || len(h) != 32 {
			return fmt.Errorf("admin credentials %s: %s: token_sha256 is not 64 hex digits", c.path, r.Name)
		}
		byHash[[32]byte(h)] = i
	}
	c.recs, c.byHash, c.loaded, c.modTime, c.size = doc.Credentials, byHash, true, fi.ModTime(), fi.Size()
	return nil
}

// Lookup returns the principal of token, if it is an unrevoked
// credential. A file that cannot be read or parsed fails closed: no
// per-admin credential is accepted until it is fixed.
func (c *Credentials) Lookup(token string) (Principal, bool) {
	if !strings.HasPrefix(token, tokenPrefix) {
		return Principal{}, false
	}
	sum := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reloadLocked(false); err != nil {
		c.loadErr = err
		c.recs, c.byHash, c.loaded = nil, map[[32]byte]int{}, false
		return Principal{}, false
	}
	c.loadErr = nil
	i, ok := c.byHash[sum]
	if !ok || c.recs[i].RevokedUnixMs != 0 {
		return Principal{}, false
	}
	role, _ := ParseRole(c.recs[i].Role)
	return Principal{Name: c.recs[i].Name, Role: role}, true
}

// LoadError is the last error reading the file (nil when it is fine).
func (c *Credentials) LoadError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loadErr
}

// List returns the credentials, revoked ones included, by name.
func (c *Credentials) List() ([]CredentialInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reloadLocked(false); err != nil {
		return nil, err
	}
	out := append([]CredentialInfo(nil), c.recs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Add creates a credential for name with role and returns its token,
// which is shown once: only its hash is stored. An active credential of
// the same name is an error (revoke it first).
func (c *Credentials) Add(name string, role Role, now time.Time) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	if role < RoleViewer || role > RoleAdmin {
		return "", fmt.Errorf("invalid role %d", int(role))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reloadLocked(true); err != nil {
		return "", err
	}
	for _, r := range c.recs {
		if r.Name == name && r.RevokedUnixMs == 0 {
			return "", fmt.Errorf("admin %q already has an active credential (revoke it first)", name)
		}
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", err
	}
	token := tokenPrefix + base64.RawURLEncoding.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(token))
	recs := append(append([]CredentialInfo(nil), c.recs...), CredentialInfo{
		Name: name, Role: role.String(), TokenSHA256: hex.EncodeToString(sum[:]), CreatedUnixMs: now.UnixMilli(),
	})
	if err := c.writeLocked(recs); err != nil {
		return "", err
	}
	return token, nil
}

// Revoke revokes name's active credential.
func (c *Credentials) Revoke(name string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reloadLocked(true); err != nil {
		return err
	}
	recs := append([]CredentialInfo(nil), c.recs...)
	found := false
	for i := range recs {
		if recs[i].Name == name && recs[i].RevokedUnixMs == 0 {
			recs[i].RevokedUnixMs = now.UnixMilli()
			found = true
		}
	}
	if !found {
		return fmt.Errorf("no active credential for admin %q", name)
	}
	return c.writeLocked(recs)
}

// writeLocked replaces the file atomically (mode 0600) and reloads it.
func (c *Credentials) writeLocked(recs []CredentialInfo) error {
	raw, err := json.MarshalIndent(credentialsDoc{Credentials: recs}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(c.path, append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("admin credentials: %w", err)
	}
	return c.reloadLocked(true)
}
