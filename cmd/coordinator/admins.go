package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/fedge-dev/fedge/coordinator/admin"
)

// adminsCmd manages per-admin credentials in DATA/admins.json: add (the
// token is printed once, only its SHA-256 is stored), list and revoke. It
// works on the data directory, with or without a running daemon; the
// daemon rereads the file when it changes, so a revocation applies to the
// next request.
func adminsCmd(sub string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admins "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "fedge-data", "the coordinator's data directory")
	role := fs.String("role", "viewer", "with add: viewer, operator or admin")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"add": 1, "list": 0, "revoke": 1}
	n, ok := want[sub]
	if !ok {
		return fmt.Errorf("%w: unknown command \"admins %s\"", errUsage, sub)
	}
	if len(pos) != n {
		return fmt.Errorf("%w: admins %s takes %d argument(s), got %q", errUsage, sub, n, pos)
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	creds, err := admin.OpenCredentials(filepath.Join(*data, admin.CredentialsFile))
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		r, err := admin.ParseRole(*role)
		if err != nil {
			return fmt.Errorf("--role: %w", err)
		}
		tok, err := creds.Add(pos[0], r, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "admin %s added with role %s; the token is shown only now:\n", pos[0], r)
		_, err = fmt.Fprintln(stdout, tok)
		return err
	case "revoke":
		if err := creds.Revoke(pos[0], time.Now()); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "admin %s revoked\n", pos[0])
		return err
	}
	list, err := creds.List()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tREVOKED\tTOKEN SHA-256")
	for _, c := range list {
		rev := "-"
		if c.RevokedUnixMs != 0 {
			rev = time.UnixMilli(c.RevokedUnixMs).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s…\n", c.Name, c.Role, time.UnixMilli(c.CreatedUnixMs).UTC().Format(time.RFC3339), rev, c.TokenSHA256[:16])
	}
	return tw.Flush()
}
