package behavior

import (
	"math"
	"testing"
	"time"
)

func base() Profile {
	return Profile{Seed: 3, SpeedMedian: 100, SpeedSigma: 0.5, Availability: 0.8, Dropout: 0.2, BandwidthBps: 1000, Latency: 50 * time.Millisecond, AttackFraction: 0.2, Attack: SignFlip, AttackScale: 10}
}

func TestDecisionsAreDeterministicAndIndependent(t *testing.T) {
	p := base()
	for d := 0; d < 50; d++ {
		if p.Speed(d) != p.Speed(d) {
			t.Fatal("speed not deterministic")
		}
		a1, f1 := p.DropsOut(d, 7)
		a2, f2 := p.DropsOut(d, 7)
		if a1 != a2 || f1 != f2 || p.Available(d, 7, time.Hour) != p.Available(d, 7, time.Hour) {
			t.Fatal("round decisions not deterministic")
		}
	}
	q := p
	q.Seed = 4
	same := 0
	for d := 0; d < 100; d++ {
		if p.Speed(d) == q.Speed(d) {
			same++
		}
	}
	if same > 0 {
		t.Fatalf("%d devices have the same speed under another seed", same)
	}
}

func TestRatesMatchProfile(t *testing.T) {
	p := base()
	const n = 20000
	avail, drops := 0, 0
	var logSpeed float64
	for d := 0; d < n; d++ {
		if p.Available(d, 1, 0) {
			avail++
		}
		if out, at := p.DropsOut(d, 1); out {
			drops++
			if at < 0 || at >= 1 {
				t.Fatalf("dropout point %v outside [0,1)", at)
			}
		}
		logSpeed += math.Log(p.Speed(d))
	}
	if a := float64(avail) / n; math.Abs(a-0.8) > 0.02 {
		t.Fatalf("availability %.3f, want 0.8", a)
	}
	if r := float64(drops) / n; math.Abs(r-0.2) > 0.02 {
		t.Fatalf("dropout rate %.3f, want 0.2", r)
	}
	if med := math.Exp(logSpeed / n); math.Abs(med-100) > 3 {
		t.Fatalf("geometric mean speed %.1f, want about 100", med)
	}
	if got := p.TrainTime(0, 0); got != 0 {
		t.Fatalf("TrainTime of no samples = %v", got)
	}
	if got := p.TransferTime(2000); got != 2050*time.Millisecond {
		t.Fatalf("TransferTime(2000) = %v, want 2.05s", got)
	}
}

func TestDiurnalSwingsAvailability(t *testing.T) {
	p := Profile{Seed: 1, SpeedMedian: 1, Availability: 0.5, Diurnal: 0.5}
	// Averaged over devices with random phases the mean stays near 0.5, but
	// each device's availability follows its own day.
	d := 0
	up := 0
	for h := 0; h < 24; h++ {
		for r := 0; r < 200; r++ {
			if p.Available(d, h*1000+r, time.Duration(h)*time.Hour) {
				up++
			}
		}
	}
	if mean := float64(up) / (24 * 200); math.Abs(mean-0.5) > 0.05 {
		t.Fatalf("mean availability over a day %.3f, want about 0.5", mean)
	}
}

func TestAttackersAreTheSeededFraction(t *testing.T) {
	p := base()
	all := p.Attackers(100)
	n := 0
	for d, a := range all {
		if a != None {
			n++
		}
		if got := p.AttackOf(d, 100); got != a {
			t.Fatalf("AttackOf(%d) = %v, Attackers says %v", d, got, a)
		}
	}
	if n != 20 {
		t.Fatalf("%d attackers, want 20", n)
	}
}

func TestCorrupt(t *testing.T) {
	p := base()
	d := []float32{1, -2, 0.5}
	p.Corrupt(SignFlip, 0, 1, d)
	if d[0] != -10 || d[1] != 20 || d[2] != -5 {
		t.Fatalf("sign flip gave %v", d)
	}
	p.Corrupt(Scale, 0, 1, d)
	if d[0] != -100 {
		t.Fatalf("scale gave %v", d)
	}
	big := make([]float32, 10000)
	p.Corrupt(Noise, 0, 1, big)
	var ss float64
	for _, v := range big {
		ss += float64(v) * float64(v)
	}
	if sd := math.Sqrt(ss / float64(len(big))); math.Abs(sd-10) > 0.5 {
		t.Fatalf("noise sd %.2f, want 10", sd)
	}
	if FlipLabel(0, 10) != 9 || FlipLabel(9, 10) != 0 {
		t.Fatal("label flip wrong")
	}
}

func TestValidateAndParse(t *testing.T) {
	if err := base().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := base()
	bad.SpeedMedian = 0
	bad.Dropout = 2
	if err := bad.Validate(); err == nil {
		t.Fatal("bad profile accepted")
	}
	for _, s := range []string{"label_flip", "sign_flip", "scale", "noise", "none"} {
		a, err := ParseAttack(s)
		if err != nil || (s != "none" && a.String() != s) {
			t.Fatalf("ParseAttack(%q) = %v, %v", s, a, err)
		}
	}
	if _, err := ParseAttack("bribe"); err == nil {
		t.Fatal("unknown attack accepted")
	}
}
