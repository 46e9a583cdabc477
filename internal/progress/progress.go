// Package progress shows the progress of long work to a person: a redrawn
// bar on a terminal, plain lines otherwise (logs, CI, pipes).
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Bar reports progress of total steps. It is safe for concurrent use.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	total    int
	label    string
	start    time.Time
	lastLine time.Time
	now      func() time.Time
	done     bool
}

// New returns a bar writing to w; it redraws in place only when w is a
// terminal.
func New(w io.Writer, label string, total int) *Bar {
	return &Bar{w: w, tty: IsTerminal(w), total: total, label: label, start: time.Now(), now: time.Now}
}

// IsTerminal reports whether w is a character device such as a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Update shows that done of total steps are finished, with a short status
// text (for example the latest accuracy).
func (b *Bar) Update(done int, status string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	elapsed := b.now().Sub(b.start).Round(100 * time.Millisecond)
	if b.tty {
		const width = 30
		filled := 0
		if b.total > 0 {
			filled = min(width, done*width/b.total)
		}
		fmt.Fprintf(b.w, "\r%s [%s%s] %d/%d %s %v\033[K", b.label, strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, b.total, status, elapsed)
		return
	}
	fmt.Fprintf(b.w, "%s %d/%d %s (%v)\n", b.label, done, b.total, status, elapsed)
	b.lastLine = b.now()
}

// Finish ends the bar's line on a terminal; later Updates are ignored.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if b.tty {
		fmt.Fprintln(b.w)
	}
}
