// Package logging builds the zap loggers fedge's commands pass down to the
// libraries: JSON lines for daemons, a human-readable console format for
// interactive tools. Libraries never build their own logger; they take a
// *zap.Logger (Nop when the caller does not care).
package logging

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Formats accepted by New.
const (
	FormatJSON    = "json"    // one JSON object per line, for daemons and log collectors
	FormatConsole = "console" // tab-separated human-readable lines
)

// ErrBadFormat and ErrBadLevel are returned for values New does not know.
var (
	ErrBadFormat = errors.New("unknown log format")
	ErrBadLevel  = errors.New("unknown log level")
)

// ParseLevel converts "debug", "info", "warn" or "error" (case-insensitive;
// "" means info) to a zap level.
func ParseLevel(level string) (zapcore.Level, error) {
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("%w %q (want debug, info, warn or error)", ErrBadLevel, level)
}

// New returns a logger writing to stderr; see NewTo.
func New(format, level string) (*zap.Logger, error) {
	return NewTo(os.Stderr, format, level)
}

// NewTo returns a logger writing to w. format is "json" or "console"; level is
// "debug", "info", "warn" or "error". Errors name the bad value and the
// accepted ones.
func NewTo(w io.Writer, format, level string) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	var enc zapcore.Encoder
	switch strings.ToLower(strings.TrimSpace(format)) {
	case FormatJSON:
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(cfg)
	case FormatConsole:
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(cfg)
	default:
		return nil, fmt.Errorf("%w %q (want %q or %q)", ErrBadFormat, format, FormatJSON, FormatConsole)
	}
	// No sampling: dropped lines would hide floods of rejected messages,
	// which are exactly the lines an operator needs; rate limiting belongs
	// to the collector.
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zapcore.ErrorLevel), zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}

// Nop returns a logger that discards everything.
func Nop() *zap.Logger { return zap.NewNop() }
