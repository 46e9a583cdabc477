// Package report writes a simulation's results: metrics.jsonl (one line per
// round), summary.json, and PNG plots of accuracy and loss against rounds
// and virtual time. Everything but the wall-time fields is a pure function
// of the rounds fed in, so the same seed gives byte-identical files.
package report

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// Round is one line of metrics.jsonl.
type Round struct {
	Round          int     `json:"round"`
	VirtualSeconds float64 `json:"virtual_seconds"`
	WallSeconds    float64 `json:"wall_seconds"`
	Accuracy       float64 `json:"accuracy"`
	Loss           float64 `json:"loss"`
	Selected       int     `json:"selected"`
	Participants   int     `json:"participants"`
	Dropped        int     `json:"dropped"`
	Late           int     `json:"late"` // updates after the deadline: recorded, not aggregated
	Rejected       int     `json:"rejected"`
	BytesUp        int64   `json:"bytes_up"`
	BytesDown      int64   `json:"bytes_down"`
}

// Summary is summary.json.
type Summary struct {
	Scenario               string   `json:"scenario"`
	Seed                   uint64   `json:"seed"`
	Model                  string   `json:"model"`
	Strategy               string   `json:"strategy"`
	Clients                int      `json:"clients"`
	Rounds                 int      `json:"rounds"`
	FinalAccuracy          float64  `json:"final_accuracy"`
	FinalLoss              float64  `json:"final_loss"`
	BestAccuracy           float64  `json:"best_accuracy"`
	TargetAccuracy         float64  `json:"target_accuracy"`
	RoundsToTarget         *int     `json:"rounds_to_target"`
	VirtualSecondsToTarget *float64 `json:"virtual_seconds_to_target"`
	VirtualSeconds         float64  `json:"virtual_seconds"`
	WallSeconds            float64  `json:"wall_seconds"`
	TotalBytesUp           int64    `json:"total_bytes_up"`
	TotalBytesDown         int64    `json:"total_bytes_down"`
	TotalParticipants      int      `json:"total_participants"`
	TotalDropped           int      `json:"total_dropped"`
	TotalLate              int      `json:"total_late"`
	TotalRejected          int      `json:"total_rejected"`
	// Baseline, when set, is the summary of the same scenario run with
	// another strategy (fleetsim runs attacker scenarios again with plain
	// FedAvg to show what the robust strategy defends against).
	Baseline *Summary `json:"baseline,omitempty"`
}

// Writer appends rounds to DIR/metrics.jsonl as they finish and writes the
// summary and plots at the end.
type Writer struct {
	dir    string
	f      *os.File
	w      *bufio.Writer
	rounds []Round
	target float64
}

// Create makes dir if needed and starts DIR/metrics.jsonl afresh.
func Create(dir string, targetAccuracy float64) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return &Writer{dir: dir, f: f, w: bufio.NewWriter(f), target: targetAccuracy}, nil
}

// Add records one finished round; the line is on disk when Add returns.
func (w *Writer) Add(r Round) error {
	if r.Round != len(w.rounds)+1 {
		return fmt.Errorf("report: round %d added after round %d", r.Round, len(w.rounds))
	}
	for name, v := range map[string]float64{"accuracy": r.Accuracy, "loss": r.Loss, "virtual_seconds": r.VirtualSeconds} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("report: round %d: %s is %v", r.Round, name, v)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.w.Write(b); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	w.rounds = append(w.rounds, r)
	return nil
}

// Rounds returns the rounds added so far.
func (w *Writer) Rounds() []Round { return w.rounds }

// Summarize computes the summary of the rounds added so far; base supplies
// the scenario fields.
func (w *Writer) Summarize(base Summary) Summary {
	s := base
	s.TargetAccuracy = w.target
	s.Rounds = len(w.rounds)
	for _, r := range w.rounds {
		s.TotalBytesUp += r.BytesUp
		s.TotalBytesDown += r.BytesDown
		s.TotalParticipants += r.Participants
		s.TotalDropped += r.Dropped
		s.TotalLate += r.Late
		s.TotalRejected += r.Rejected
		s.BestAccuracy = math.Max(s.BestAccuracy, r.Accuracy)
		if s.RoundsToTarget == nil && w.target > 0 && r.Accuracy >= w.target {
			n, vs := r.Round, r.VirtualSeconds
			s.RoundsToTarget, s.VirtualSecondsToTarget = &n, &vs
		}
	}
	if n := len(w.rounds); n > 0 {
		last := w.rounds[n-1]
		s.FinalAccuracy, s.FinalLoss = last.Accuracy, last.Loss
		s.VirtualSeconds, s.WallSeconds = last.VirtualSeconds, last.WallSeconds
	}
	return s
}

// Finish writes summary.json and the plots, closes metrics.jsonl and
// returns the summary and the paths of the plots.
func (w *Writer) Finish(base Summary) (Summary, []string, error) {
	s := w.Summarize(base)
	var errs []error
	if err := w.w.Flush(); err != nil {
		errs = append(errs, err)
	}
	if err := w.f.Sync(); err != nil {
		errs = append(errs, err)
	}
	if err := w.f.Close(); err != nil {
		errs = append(errs, err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		errs = append(errs, err)
	} else if err := os.WriteFile(filepath.Join(w.dir, "summary.json"), append(b, '\n'), 0o644); err != nil {
		errs = append(errs, err)
	}
	plots, err := Plot(w.dir, s.Scenario, w.rounds, w.target)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return s, plots, fmt.Errorf("report: %w", err)
	}
	return s, plots, nil
}
