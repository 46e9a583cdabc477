package report

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func rounds() []Round {
	return []Round{
		{Round: 1, VirtualSeconds: 60, WallSeconds: 0.5, Accuracy: 0.90, Loss: 0.40, Selected: 10, Participants: 10, BytesUp: 100, BytesDown: 200},
		{Round: 2, VirtualSeconds: 121, WallSeconds: 1.1, Accuracy: 0.955, Loss: 0.20, Selected: 10, Participants: 9, Dropped: 1, BytesUp: 90, BytesDown: 200},
		{Round: 3, VirtualSeconds: 180, WallSeconds: 1.6, Accuracy: 0.96, Loss: 0.15, Selected: 10, Participants: 10, BytesUp: 100, BytesDown: 200},
	}
}

func TestWriterFilesAndSummary(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rounds() {
		if err := w.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	s, plots, err := w.Finish(Summary{Scenario: "t", Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if s.RoundsToTarget == nil || *s.RoundsToTarget != 2 || *s.VirtualSecondsToTarget != 121 {
		t.Fatalf("rounds to target = %v", s.RoundsToTarget)
	}
	if s.FinalAccuracy != 0.96 || s.TotalBytesUp != 290 || s.TotalDropped != 1 || s.Rounds != 3 {
		t.Fatalf("summary %+v", s)
	}
	lines, _ := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if n := strings.Count(string(lines), "\n"); n != 3 {
		t.Fatalf("metrics.jsonl has %d lines", n)
	}
	var back Summary
	raw, _ := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err := json.Unmarshal(raw, &back); err != nil || *back.RoundsToTarget != 2 {
		t.Fatalf("summary.json: %v %s", err, raw)
	}
	if len(plots) != 4 {
		t.Fatalf("plots %v", plots)
	}
	for _, p := range plots {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil || img.Bounds().Dx() < 100 {
			t.Fatalf("%s is not a usable PNG: %v", p, err)
		}
	}
}

func TestTargetNotReachedIsNull(t *testing.T) {
	w, _ := Create(t.TempDir(), 0.99)
	for _, r := range rounds() {
		_ = w.Add(r)
	}
	s, _, err := w.Finish(Summary{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	if !strings.Contains(string(b), `"rounds_to_target":null`) {
		t.Fatalf("want rounds_to_target null, got %s", b)
	}
}

func TestAddRejectsBadRounds(t *testing.T) {
	w, _ := Create(t.TempDir(), 0.9)
	if err := w.Add(Round{Round: 2}); err == nil {
		t.Fatal("out-of-order round accepted")
	}
	if err := w.Add(Round{Round: 1, Accuracy: math.NaN()}); err == nil {
		t.Fatal("NaN accuracy accepted")
	}
}
