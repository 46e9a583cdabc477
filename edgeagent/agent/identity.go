package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ParsePublicKey decodes an Ed25519 public key given as 64 hex digits,
// base64 (standard or URL, padded or not), a PEM PUBLIC KEY block, or the
// path of a file holding one of these.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if k, err := parseKeyText(s); err == nil {
		return k, nil
	}
	if strings.Contains(s, "BEGIN") {
		return parseKeyText(s) // report the PEM error
	}
	raw, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("not a hex, base64 or PEM Ed25519 key, nor a readable file: %w", err)
	}
	k, err := parseKeyText(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", s, err)
	}
	return k, nil
}

func parseKeyText(s string) (ed25519.PublicKey, error) {
	if strings.HasPrefix(s, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(s))
		if blk == nil {
			return nil, errors.New("bad PEM block")
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM public key: %w", err)
		}
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("PEM key is %T, want Ed25519", pub)
		}
		return k, nil
	}
	if len(s) == 2*ed25519.PublicKeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return ed25519.PublicKey(b), nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
			return ed25519.PublicKey(b), nil
		}
	}
	return nil, fmt.Errorf("not a %d-byte Ed25519 key in hex, base64 or PEM", ed25519.PublicKeySize)
}

// keyPEMType is the PEM block type of the stored device key.
const keyPEMType = "PRIVATE KEY"

// LoadOrCreateKey returns the device's Ed25519 key stored as a PKCS#8 PEM
// file at path, creating it (mode 0600) if it does not exist.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(raw)
		if blk == nil || blk.Type != keyPEMType {
			return nil, fmt.Errorf("device key %s: no %s PEM block", path, keyPEMType)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("device key %s: %w", path, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("device key %s is %T, want Ed25519", path, k)
		}
		return ek, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("device key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("generate device key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode device key: %w", err)
	}
	var buf bytes.Buffer
	if err := pem.Encode(&buf, &pem.Block{Type: keyPEMType, Bytes: der}); err != nil {
		return nil, fmt.Errorf("encode device key: %w", err)
	}
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, buf.Bytes()); err != nil {
		return nil, fmt.Errorf("write device key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("write device key: %w", err)
	}
	return priv, nil
}
