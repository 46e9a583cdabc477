package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/fedge-dev/fedge/internal/atomicfile"
)

// Files of a coordinator data directory.
const (
	KeyFile         = "coordinator.key"  // Ed25519 private key, PEM (seed), 0600
	TokenFile       = "admin.token"      // admin API bearer token, 0600
	NonceKeyFile    = "nonce.key"        // task nonce key, 0600
	CredentialsFile = "credentials.json" // broker credentials (hashes), 0600
	StoreDir        = "store"            // Badger
	ModelsDir       = "models"           // user-added .wasm modules
)

const keyPEMType = "FEDGE COORDINATOR ED25519 SEED"

// LoadOrCreateKey reads the coordinator key at path, or generates one and
// writes it with mode 0600. created reports the latter.
func LoadOrCreateKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		key, err := ParseKey(raw)
		if err != nil {
			return nil, false, fmt.Errorf("key %s: %w", path, err)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("read key: %w", err)
	}
	_, key, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate key: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: keyPEMType, Bytes: key.Seed()})
	if err := atomicfile.Write(path, out, 0o600); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// ParseKey parses a key file written by LoadOrCreateKey.
func ParseKey(raw []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != keyPEMType || len(b.Bytes) != ed25519.SeedSize {
		return nil, errors.New("not a coordinator key (PEM " + keyPEMType + " with a 32-byte seed)")
	}
	return ed25519.NewKeyFromSeed(b.Bytes), nil
}

// PublicKeyHex is the form agents pin.
func PublicKeyHex(key ed25519.PrivateKey) string {
	return hex.EncodeToString(key.Public().(ed25519.PublicKey))
}

// LoadOrCreateSecret reads a base64url secret at path or writes a new
// random one of n bytes (mode 0600), returning its text form.
func LoadOrCreateSecret(path string, n int) (string, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(raw))
		if b, err := base64.RawURLEncoding.DecodeString(s); err != nil || len(b) < 16 {
			return "", fmt.Errorf("secret %s: want at least 16 bytes of unpadded base64url", path)
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read secret: %w", err)
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	s := base64.RawURLEncoding.EncodeToString(b)
	if err := atomicfile.Write(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}
