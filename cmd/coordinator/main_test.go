package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args   []string
		status int
		out    string
	}{
		{nil, 2, "no command"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"round"}, 2, "needs a subcommand"},
		{[]string{"round", "explode"}, 2, "unknown command"},
		{[]string{"devices", "add"}, 2, "takes 1 argument"},
		{[]string{"models", "add", "x"}, 2, "takes 2 argument"},
		{[]string{"serve", "extra"}, 2, "takes no arguments"},
		{[]string{"serve", "--fleet", "a/b"}, 1, "invalid id"},
		{[]string{"serve", "--listen", ""}, 2, "no broker"},
		{[]string{"round", "status", "--token", "t", "--admin", "127.0.0.1:1", "--timeout", "2s"}, 1, "admin api"},
		{[]string{"help"}, 0, "round start"},
	} {
		var out, errOut bytes.Buffer
		if got := run(c.args, &out, &errOut); got != c.status || !strings.Contains(out.String()+errOut.String(), c.out) {
			t.Errorf("%v: status %d, output %q; want %d containing %q", c.args, got, out.String()+errOut.String(), c.status, c.out)
		}
	}
}

func TestKeyIsStable(t *testing.T) {
	dir := t.TempDir()
	var a, b, errOut bytes.Buffer
	if run([]string{"key", "--data", dir}, &a, &errOut) != 0 || run([]string{"key", "--data", dir}, &b, &errOut) != 0 {
		t.Fatal(errOut.String())
	}
	if a.String() != b.String() || len(strings.TrimSpace(a.String())) != 64 {
		t.Fatalf("keys %q %q", a.String(), b.String())
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	v := fs.String("admin", "", "")
	pos, err := parseInterspersed(fs, []string{"dev-1", "--admin", "h:1", "more"})
	if err != nil || *v != "h:1" || len(pos) != 2 || pos[0] != "dev-1" || pos[1] != "more" {
		t.Fatalf("%v %q %v", pos, *v, err)
	}
}

func TestTagFlag(t *testing.T) {
	tags := tagFlag{}
	if err := tags.Set("region=eu"); err != nil || tags["region"] != "eu" {
		t.Fatal(err)
	}
	if err := tags.Set("novalue"); err == nil {
		t.Fatal("tag without = accepted")
	}
}
