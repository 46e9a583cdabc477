package broker

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/internal/topics"
)

func TestGenerateSecret(t *testing.T) {
	s1, p1, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s2, p2, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != SecretLen || bytes.Equal(s1, s2) || p1 == p2 {
		t.Fatalf("secrets not random 32-byte values: %x %x", s1, s2)
	}
	if len(p1) != 43 || strings.ContainsAny(p1, "+/=") {
		t.Fatalf("printable form %q is not 43 chars of unpadded URL-safe base64", p1)
	}
	back, err := DecodeSecret(p1)
	if err != nil || !bytes.Equal(back, s1) {
		t.Fatalf("DecodeSecret(EncodeSecret(s)) = %x, %v", back, err)
	}
}

func TestSecretHash(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	h1, err := HashSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := HashSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	if h1.String() == h2.String() {
		t.Fatal("two hashes of one secret are equal: no salt")
	}
	if strings.Contains(h1.String(), EncodeSecret(secret)) {
		t.Fatal("hash string contains the secret")
	}
	for _, h := range []SecretHash{h1, h2} {
		back, err := ParseSecretHash(h.String())
		if err != nil {
			t.Fatal(err)
		}
		if back != h || !back.Verify(secret) {
			t.Fatalf("round trip of %s failed", h)
		}
		wrong := bytes.Clone(secret)
		wrong[31] ^= 1
		if back.Verify(wrong) || back.Verify(secret[:31]) || back.Verify(nil) {
			t.Fatal("hash verifies a different secret")
		}
	}
	if _, err := HashSecret(make([]byte, MinSecretLen-1)); !errors.Is(err, ErrWeakSecret) {
		t.Fatalf("short secret: %v, want ErrWeakSecret", err)
	}
}

// secretHashSeeds are good and bad stored hash strings, shared by the table
// test and the fuzz seed corpus.
func secretHashSeeds(t testing.TB) []struct {
	in string
	ok bool
} {
	h, err := HashSecret(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	good := h.String()
	parts := strings.Split(good, "$")
	return []struct {
		in string
		ok bool
	}{
		{good, true},
		{"", false},
		{"sha256", false},
		{"sha256$$", false},
		{"md5$" + parts[1] + "$" + parts[2], false},
		{"sha256$" + parts[1] + "$" + parts[2] + "$x", false},
		{"sha256$" + parts[1][:10] + "$" + parts[2], false},
		{"sha256$" + parts[1] + "$" + parts[2] + "AA", false},
		{"sha256$" + parts[1] + "=$" + parts[2], false},
		{"sha256$" + strings.Repeat("!", 22) + "$" + parts[2], false},
	}
}

func TestParseSecretHash(t *testing.T) {
	for _, tc := range secretHashSeeds(t) {
		_, err := ParseSecretHash(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSecretHash(%q) error = %v, want ok = %v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadHashValue) {
			t.Errorf("ParseSecretHash(%q) error %v is not ErrBadHashValue", tc.in, err)
		}
	}
}

func FuzzParseSecretHash(f *testing.F) {
	for _, tc := range secretHashSeeds(f) {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseSecretHash(s)
		if err != nil {
			return
		}
		// Whatever parses must print back to an equal value.
		back, err := ParseSecretHash(h.String())
		if err != nil || back != h {
			t.Fatalf("re-parse of %q: %v", h.String(), err)
		}
	})
}

func TestCredentialsAddValidation(t *testing.T) {
	secret := make([]byte, 32)
	dev := func(id, fleet string) topics.Identity {
		return topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: fleet}
	}
	tests := []struct {
		name   string
		user   string
		secret []byte
		id     topics.Identity
		want   error
	}{
		{"device", "d1", secret, dev("d1", "f"), nil},
		{"coordinator", "coord", secret, topics.Identity{Role: topics.RoleCoordinator, Fleet: "f"}, nil},
		{"device username differs from id", "d1", secret, dev("d2", "f"), ErrBadIdentity},
		{"bad username", "a/b", secret, topics.Identity{Role: topics.RoleCoordinator, Fleet: "f"}, ErrBadIdentity},
		{"empty username", "", secret, topics.Identity{Role: topics.RoleCoordinator, Fleet: "f"}, ErrBadIdentity},
		{"bad fleet", "d1", secret, dev("d1", "f/+"), ErrBadIdentity},
		{"no role", "d1", secret, topics.Identity{ID: "d1", Fleet: "f"}, ErrBadIdentity},
		{"weak secret", "d1", []byte("password"), dev("d1", "f"), ErrWeakSecret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCredentials()
			err := c.Add(tc.user, tc.secret, tc.id)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Add error = %v, want %v", err, tc.want)
			}
			if got := c.Len(); (got == 1) != (tc.want == nil) {
				t.Fatalf("Len = %d after Add error %v", got, err)
			}
		})
	}
}

func TestCredentialsVerifyAndRemove(t *testing.T) {
	c := NewCredentials()
	secret, password, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	id := topics.Identity{Role: topics.RoleDevice, ID: "d1", Fleet: "f"}
	if err := c.Add("d1", secret, id); err != nil {
		t.Fatal(err)
	}
	if err := c.AddCert("d2", topics.Identity{Role: topics.RoleDevice, ID: "d2", Fleet: "f"}); err != nil {
		t.Fatal(err)
	}
	got, err := c.verifyPassword("d1", []byte(password))
	if err != nil || got != id {
		t.Fatalf("verify good password: %v %v", got, err)
	}
	for _, bad := range []struct{ user, pw string }{
		{"d1", ""}, {"d1", password + "A"}, {"d1", "%%%"}, {"nobody", password}, {"d2", password},
	} {
		if _, err := c.verifyPassword(bad.user, []byte(bad.pw)); err == nil {
			t.Errorf("verify(%q, %q) succeeded", bad.user, bad.pw)
		}
	}
	// A stored hash can be loaded back instead of the secret.
	h, err := HashSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	c2 := NewCredentials()
	parsed, err := ParseSecretHash(h.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.AddHashed("d1", parsed, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.verifyPassword("d1", []byte(password)); err != nil {
		t.Fatalf("verify against reloaded hash: %v", err)
	}
	c.Remove("d1")
	c.Remove("never-added")
	if _, ok := c.Lookup("d1"); ok || c.Len() != 1 {
		t.Fatalf("Remove left d1 (Len %d)", c.Len())
	}
	if _, err := c.verifyPassword("d1", []byte(password)); err == nil {
		t.Fatal("removed user still verifies")
	}
}

// FuzzVerifyPassword feeds arbitrary MQTT passwords to the credential check:
// it must never panic and only the issued password may pass.
func FuzzVerifyPassword(f *testing.F) {
	c := NewCredentials()
	secret, password, err := GenerateSecret()
	if err != nil {
		f.Fatal(err)
	}
	if err := c.Add("d1", secret, topics.Identity{Role: topics.RoleDevice, ID: "d1", Fleet: "f"}); err != nil {
		f.Fatal(err)
	}
	// The last character carries 2 unused bits: flipping them must not give
	// a second valid password.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	alt := string(alphabet[strings.IndexByte(alphabet, password[42])+1])
	if _, err := base64.RawURLEncoding.DecodeString(password[:42] + alt); err != nil {
		f.Fatalf("seed %q should decode leniently: %v", password[:42]+alt, err)
	}
	for _, seed := range []string{password, "", "A", password + "A", password[:42], password[:42] + alt, strings.ToUpper(password), "%%%%", "====", EncodeSecret(make([]byte, 32))} {
		f.Add("d1", []byte(seed))
	}
	f.Add("nobody", []byte(password))
	f.Fuzz(func(t *testing.T, user string, pw []byte) {
		_, err := c.verifyPassword(user, pw)
		if err == nil && (user != "d1" || string(pw) != password) {
			t.Fatalf("verify(%q, %q) succeeded", user, pw)
		}
	})
}
