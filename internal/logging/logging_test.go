package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestNewTo(t *testing.T) {
	cases := []struct {
		name, format, level string
		wantErr             error
		debugShown          bool
		json                bool
	}{
		{"json info", "json", "info", nil, false, true},
		{"json debug", "JSON", "debug", nil, true, true},
		{"console warn", "console", "warn", nil, false, false},
		{"console default level", "console", "", nil, false, false},
		{"console warning alias", "console", "Warning", nil, false, false},
		{"json error", "json", "error", nil, false, true},
		{"bad format", "xml", "info", ErrBadFormat, false, false},
		{"empty format", "", "info", ErrBadFormat, false, false},
		{"bad level", "json", "verbose", ErrBadLevel, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := NewTo(&buf, c.format, c.level)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				if log != nil {
					t.Fatal("logger returned together with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("dbg-line")
			log.Error("err-line")
			out := buf.String()
			if got := strings.Contains(out, "dbg-line"); got != c.debugShown {
				t.Errorf("debug line shown = %v, want %v; output:\n%s", got, c.debugShown, out)
			}
			if !strings.Contains(out, "err-line") {
				t.Errorf("error line missing:\n%s", out)
			}
			last := strings.Split(strings.TrimSpace(out), "\n")
			var obj map[string]any
			isJSON := json.Unmarshal([]byte(last[len(last)-1]), &obj) == nil
			if isJSON != c.json {
				t.Errorf("json output = %v, want %v: %q", isJSON, c.json, last[len(last)-1])
			}
			if c.json && obj["msg"] != "err-line" {
				t.Errorf("json msg = %v", obj["msg"])
			}
		})
	}
}

func TestErrorMessagesNameTheValue(t *testing.T) {
	_, err := New("yaml", "info")
	if err == nil || !strings.Contains(err.Error(), `"yaml"`) || !strings.Contains(err.Error(), "console") {
		t.Errorf("format error %v does not name the bad value and the choices", err)
	}
	_, err = New("json", "loud")
	if err == nil || !strings.Contains(err.Error(), `"loud"`) || !strings.Contains(err.Error(), "debug") {
		t.Errorf("level error %v does not name the bad value and the choices", err)
	}
}

func TestNopDiscards(t *testing.T) {
	log := Nop()
	log.Error("nothing") // must not panic or print
	if log.Core().Enabled(0) {
		t.Error("Nop logger is enabled")
	}
}
