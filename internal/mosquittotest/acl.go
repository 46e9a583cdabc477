package mosquittotest

import (
	"fmt"
	"strings"

	"github.com/fedge-dev/fedge/internal/broker/mosquitto"
)

// ACLFile renders the Mosquitto acl_file of users with the production
// generator (mosquitto.ACL), which grants every user exactly what
// topics.Allowed grants its identity.
func ACLFile(users []User) (string, error) {
	accounts := make([]mosquitto.Account, 0, len(users))
	for _, u := range users {
		if err := validateUser(u); err != nil {
			return "", err
		}
		accounts = append(accounts, mosquitto.Account{Name: u.Name, Identity: u.Identity})
	}
	return mosquitto.ACL(accounts)
}

// validateUser checks what the password file, the ACL file and the policy
// need from an account.
func validateUser(u User) error {
	if err := (mosquitto.Account{Name: u.Name, Identity: u.Identity}).Validate(); err != nil {
		return err
	}
	if strings.ContainsAny(u.Password, ":\n\r") {
		return fmt.Errorf("user %q: password may not contain ':' or line breaks (Mosquitto password file)", u.Name)
	}
	return nil
}
