// Command coordinator is the fedge coordinator daemon and its admin CLI.
//
//	coordinator serve [flags]                  run the daemon (embedded MQTT broker by default)
//	coordinator round start|status|watch|stop|list [flags]
//	coordinator models list|add NAME FILE|rollback VERSION
//	coordinator devices list|add ID|approve ID
//	coordinator audit
//	coordinator admins add NAME --role R|list|revoke NAME
//	coordinator key [--data DIR]               print the public key agents pin
//	coordinator broker-config mosquitto --out DIR   files for an external Mosquitto
//
// Everything but serve and key talks to a running daemon's admin API
// (--admin, default http://127.0.0.1:8080) with the token from --token,
// $FEDGE_ADMIN_TOKEN or DIR/admin.token; admins works on DIR itself.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `usage: coordinator <command> [flags]

commands:
  serve                         run the coordinator daemon
  round start [flags]           start a run (see coordinator round start -h)
  round status [--json]         show the current run and round
  round watch                   follow the run with a progress bar
  round stop [--reason R]       stop the active run
  round list                    list runs
  models list                   list model modules and global versions
  models add NAME FILE.wasm     register a model module
  models rollback VERSION       publish a new version with VERSION's weights
  devices list                  list devices
  devices add ID                create broker credentials and an enrollment token
  devices approve ID            approve a device that enrolled without a token
  audit                         show the audit log
  admins add NAME --role R      create an admin credential (viewer, operator, admin); prints its token once
  admins list                   list admin credentials
  admins revoke NAME            revoke NAME's credential
  key                           print the coordinator public key (hex)
  broker-config mosquitto       write an external Mosquitto's config, password and ACL files
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage reports bad command-line use (exit status 2).
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, err)
		fmt.Fprint(stderr, usage)
		return 2
	}
	fmt.Fprintln(stderr, "coordinator:", err)
	return 1
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, rest := args[0], args[1:]
	sub := ""
	if len(rest) > 0 {
		sub = rest[0]
	}
	switch cmd {
	case "serve":
		return serve(rest, stderr)
	case "key":
		return keyCmd(rest, stdout, stderr)
	case "audit":
		return auditCmd(rest, stdout, stderr)
	case "broker-config":
		return brokerConfigCmd(rest, stdout, stderr)
	case "admins":
		if sub == "" {
			return fmt.Errorf("%w: admins needs a subcommand", errUsage)
		}
		return adminsCmd(sub, rest[1:], stdout, stderr)
	case "round", "models", "devices":
		if sub == "" {
			return fmt.Errorf("%w: %s needs a subcommand", errUsage, cmd)
		}
		return clientCmd(cmd, sub, rest[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}
