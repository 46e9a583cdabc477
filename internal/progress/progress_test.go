package progress

import (
	"bytes"
	"strings"
	"testing"
)

func TestPlainLinesWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, "round", 4)
	b.Update(1, "acc 0.91")
	b.Update(2, "acc 0.94")
	b.Finish()
	b.Update(3, "ignored")
	out := buf.String()
	if strings.Contains(out, "\r") || strings.Contains(out, "\033") {
		t.Fatalf("control characters written to a non-terminal: %q", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "round 1/4 acc 0.91") || !strings.HasPrefix(lines[1], "round 2/4 acc 0.94") {
		t.Fatalf("lines %q", lines)
	}
}

func TestTerminalRedraws(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, "round", 10)
	b.tty = true
	b.Update(5, "acc 0.9")
	b.Finish()
	out := buf.String()
	if !strings.HasPrefix(out, "\rround [###############...............] 5/10 acc 0.9") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("bar %q", out)
	}
}
