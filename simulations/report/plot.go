package report

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Plot draws accuracy and loss against rounds and against virtual time
// into dir and returns the files written.
func Plot(dir, title string, rounds []Round, target float64) ([]string, error) {
	if len(rounds) == 0 {
		return nil, nil
	}
	type series struct {
		file, y, x string
		pick       func(Round) (float64, float64)
		target     bool
	}
	all := []series{
		{"accuracy.png", "test accuracy", "round", func(r Round) (float64, float64) { return float64(r.Round), r.Accuracy }, true},
		{"loss.png", "test loss", "round", func(r Round) (float64, float64) { return float64(r.Round), r.Loss }, false},
		{"accuracy-time.png", "test accuracy", "virtual time (s)", func(r Round) (float64, float64) { return r.VirtualSeconds, r.Accuracy }, true},
		{"loss-time.png", "test loss", "virtual time (s)", func(r Round) (float64, float64) { return r.VirtualSeconds, r.Loss }, false},
	}
	var out []string
	for _, s := range all {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = s.x
		p.Y.Label.Text = s.y
		p.Add(plotter.NewGrid())
		pts := make(plotter.XYs, len(rounds))
		for i, r := range rounds {
			pts[i].X, pts[i].Y = s.pick(r)
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return out, fmt.Errorf("plot %s: %w", s.file, err)
		}
		p.Add(line)
		if s.target && target > 0 {
			tl, err := plotter.NewLine(plotter.XYs{{X: pts[0].X, Y: target}, {X: pts[len(pts)-1].X, Y: target}})
			if err == nil {
				tl.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
				p.Add(tl)
				p.Legend.Add(fmt.Sprintf("target %.3g", target), tl)
			}
		}
		path := filepath.Join(dir, s.file)
		if err := p.Save(7*vg.Inch, 4*vg.Inch, path); err != nil {
			return out, fmt.Errorf("plot %s: %w", s.file, err)
		}
		out = append(out, path)
	}
	return out, nil
}
