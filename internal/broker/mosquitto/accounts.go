package mosquitto

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"github.com/fedge-dev/fedge/internal/atomicfile"
	"github.com/fedge-dev/fedge/internal/topics"
)

// AccountsFile is the file name, in the coordinator's data directory, of
// the device accounts issued for an external broker: `devices add` records
// each device's password hash there (never the password), and
// `broker-config` renders the password and ACL files from it.
const AccountsFile = "broker-accounts.json"

// maxAccountsFile bounds what LoadAccounts reads.
const maxAccountsFile = 64 << 20

// Accounts are the stored device accounts of an external broker.
type Accounts struct {
	path  string
	Users map[string]StoredAccount `json:"users"`
}

// StoredAccount is one device account: its Mosquitto password hash.
type StoredAccount struct {
	Hash string `json:"hash"`
}

// LoadAccounts reads path; a missing file is an empty set.
func LoadAccounts(path string) (*Accounts, error) {
	a := &Accounts{path: path, Users: map[string]StoredAccount{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("broker accounts: %w", err)
	}
	if len(raw) > maxAccountsFile {
		return nil, fmt.Errorf("broker accounts %s: %d bytes is too large", path, len(raw))
	}
	if err := json.Unmarshal(raw, a); err != nil {
		return nil, fmt.Errorf("broker accounts %s: %w", path, err)
	}
	if a.Users == nil {
		a.Users = map[string]StoredAccount{}
	}
	for name, u := range a.Users {
		if err := topics.ValidateDeviceID(name); err != nil {
			return nil, fmt.Errorf("broker accounts %s: %w", path, err)
		}
		if _, err := VerifyPassword(u.Hash, ""); err != nil {
			return nil, fmt.Errorf("broker accounts %s: user %q: %w", path, name, err)
		}
	}
	return a, nil
}

// Put records the password hash of device id (replacing an earlier one).
func (a *Accounts) Put(id, hash string) error {
	if err := topics.ValidateDeviceID(id); err != nil {
		return err
	}
	if _, err := VerifyPassword(hash, ""); err != nil {
		return err
	}
	a.Users[id] = StoredAccount{Hash: hash}
	return nil
}

// Devices returns the device ids in order.
func (a *Accounts) Devices() []string {
	ids := make([]string, 0, len(a.Users))
	for id := range a.Users {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Save writes the file atomically, readable by its owner only.
func (a *Accounts) Save() error {
	raw, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(a.path, append(raw, '\n'), 0o600)
}
