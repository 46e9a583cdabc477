// Package behavior decides how each simulated device behaves: how fast it
// trains, when it is reachable, whether it drops out of a round, how slow its
// link is, and whether and how it attacks. Every decision is a pure function
// of the scenario seed, the device index and the round, so a simulation can
// be replayed exactly and decisions do not depend on goroutine scheduling.
package behavior

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Profile is the fleet-wide description of device behaviour.
type Profile struct {
	Seed uint64
	// SpeedMedian is the median training throughput in samples per second;
	// each device's speed is log-normal around it with SpeedSigma.
	SpeedMedian float64
	SpeedSigma  float64
	// Availability is the probability that a device is reachable when a
	// round starts; Diurnal swings it sinusoidally over a 24 h period with
	// this amplitude, each device with its own phase.
	Availability float64
	Diurnal      float64
	// Dropout is the probability that a device selected for a round
	// disappears before sending its update.
	Dropout float64
	// BandwidthBps is the link speed in bytes per second (0 = unlimited).
	BandwidthBps float64
	// Latency is added to every message.
	Latency time.Duration
	// AttackFraction of the devices (chosen by seed) attack with Attack.
	AttackFraction float64
	Attack         Attack
	AttackScale    float64
}

// Attack is a kind of malicious behaviour.
type Attack int

const (
	// None is an honest device.
	None Attack = iota
	// LabelFlip trains on labels mapped y -> classes-1-y.
	LabelFlip
	// SignFlip sends -scale times its honest delta.
	SignFlip
	// Scale sends scale times its honest delta.
	Scale
	// Noise sends Gaussian noise of standard deviation scale instead of its delta.
	Noise
)

// ParseAttack maps a scenario's attack name to an Attack.
func ParseAttack(s string) (Attack, error) {
	switch s {
	case "", "none":
		return None, nil
	case "label_flip":
		return LabelFlip, nil
	case "sign_flip":
		return SignFlip, nil
	case "scale":
		return Scale, nil
	case "noise":
		return Noise, nil
	}
	return None, fmt.Errorf("behavior: unknown attack %q (label_flip, sign_flip, scale, noise)", s)
}

func (a Attack) String() string {
	return [...]string{"none", "label_flip", "sign_flip", "scale", "noise"}[a]
}

// Validate checks the profile.
func (p Profile) Validate() error {
	var errs []error
	check := func(ok bool, format string, a ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("behavior: "+format, a...))
		}
	}
	check(p.SpeedMedian > 0 && !math.IsInf(p.SpeedMedian, 0), "speed median %v must be positive", p.SpeedMedian)
	check(p.SpeedSigma >= 0 && p.SpeedSigma < 5, "speed sigma %v must be in [0, 5)", p.SpeedSigma)
	check(p.Availability >= 0 && p.Availability <= 1, "availability %v must be in [0, 1]", p.Availability)
	check(p.Diurnal >= 0 && p.Diurnal <= 1, "diurnal amplitude %v must be in [0, 1]", p.Diurnal)
	check(p.Dropout >= 0 && p.Dropout <= 1, "dropout %v must be in [0, 1]", p.Dropout)
	check(p.BandwidthBps >= 0 && !math.IsInf(p.BandwidthBps, 0), "bandwidth %v must be non-negative", p.BandwidthBps)
	check(p.Latency >= 0, "latency %v must be non-negative", p.Latency)
	check(p.AttackFraction >= 0 && p.AttackFraction <= 1, "attack fraction %v must be in [0, 1]", p.AttackFraction)
	check(p.Attack >= None && p.Attack <= Noise, "unknown attack %d", p.Attack)
	return errors.Join(errs...)
}

// Streams of randomness, kept apart so that changing one decision does not
// shift the others.
const (
	streamSpeed uint64 = iota + 1
	streamPhase
	streamAvailable
	streamDropout
	streamDropoutAt
	streamAttacker
	streamNoise
)

func (p Profile) rng(stream, device, round uint64) *rand.Rand {
	// SplitMix-style mixing of the inputs into two PCG words.
	a := mix(p.Seed ^ mix(stream*golden+device))
	b := mix(a ^ mix(round+0x632be59bd9b4e019))
	return rand.New(rand.NewPCG(a, b))
}

// golden is 2^64 divided by the golden ratio; a variable so that products
// with it wrap instead of overflowing as constants.
var golden uint64 = 0x9e3779b97f4a7c15

func (p Profile) attackHash(device int) uint64 {
	return mix(p.Seed ^ mix(streamAttacker*golden+uint64(device)))
}

func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Speed is the device's training throughput in samples per second.
func (p Profile) Speed(device int) float64 {
	r := p.rng(streamSpeed, uint64(device), 0)
	return p.SpeedMedian * math.Exp(p.SpeedSigma*r.NormFloat64())
}

// TrainTime is how long the device takes to train on samples samples.
func (p Profile) TrainTime(device, samples int) time.Duration {
	return time.Duration(float64(samples) / p.Speed(device) * float64(time.Second))
}

// TransferTime is how long bytes take over the device's link, latency included.
func (p Profile) TransferTime(bytes int) time.Duration {
	d := p.Latency
	if p.BandwidthBps > 0 {
		d += time.Duration(float64(bytes) / p.BandwidthBps * float64(time.Second))
	}
	return d
}

// Available reports whether the device is reachable for round, which
// starts at virtual time at (since the simulation began).
func (p Profile) Available(device, round int, at time.Duration) bool {
	prob := p.Availability
	if p.Diurnal > 0 {
		phase := p.rng(streamPhase, uint64(device), 0).Float64() * 2 * math.Pi
		day := 2 * math.Pi * at.Hours() / 24
		prob = math.Min(1, math.Max(0, prob+p.Diurnal*math.Sin(day+phase)))
	}
	return p.rng(streamAvailable, uint64(device), uint64(round)).Float64() < prob
}

// DropsOut reports whether the device vanishes during round, and at what
// fraction of its work (0 = before training, 1 = just before sending).
func (p Profile) DropsOut(device, round int) (bool, float64) {
	if p.rng(streamDropout, uint64(device), uint64(round)).Float64() >= p.Dropout {
		return false, 0
	}
	return true, p.rng(streamDropoutAt, uint64(device), uint64(round)).Float64()
}

// AttackOf is the device's attack; a fixed, seed-chosen set of
// round(AttackFraction*devices) devices attack.
func (p Profile) AttackOf(device, devices int) Attack {
	if p.Attack == None || p.AttackFraction <= 0 {
		return None
	}
	k := int(math.Round(p.AttackFraction * float64(devices)))
	// Device d attacks when its position in a seeded permutation is below k.
	// Ranking by a per-device hash gives that permutation without building it.
	rank := 0
	mine := p.attackHash(device)
	for d := 0; d < devices && rank < k; d++ {
		h := p.attackHash(d)
		if h < mine || (h == mine && d < device) {
			rank++
		}
	}
	if rank < k {
		return p.Attack
	}
	return None
}

// Attackers returns the attack of every device; O(devices log devices).
func (p Profile) Attackers(devices int) []Attack {
	out := make([]Attack, devices)
	if p.Attack == None || p.AttackFraction <= 0 {
		return out
	}
	k := int(math.Round(p.AttackFraction * float64(devices)))
	type ranked struct {
		h uint64
		d int
	}
	all := make([]ranked, devices)
	for d := range all {
		all[d] = ranked{p.attackHash(d), d}
	}
	sortRanked(all, func(a, b ranked) bool { return a.h < b.h || (a.h == b.h && a.d < b.d) })
	for _, r := range all[:k] {
		out[r.d] = p.Attack
	}
	return out
}

// FlipLabel is the label a LabelFlip attacker trains on.
func FlipLabel(label, classes int) int { return classes - 1 - label }

// Corrupt applies an update-level attack to a delta in place; LabelFlip and
// None leave it alone (label flipping happens in the data).
func (p Profile) Corrupt(a Attack, device, round int, delta []float32) {
	switch a {
	case SignFlip:
		s := float32(-p.AttackScale)
		for i := range delta {
			delta[i] *= s
		}
	case Scale:
		s := float32(p.AttackScale)
		for i := range delta {
			delta[i] *= s
		}
	case Noise:
		r := p.rng(streamNoise, uint64(device), uint64(round))
		for i := range delta {
			delta[i] = float32(r.NormFloat64() * p.AttackScale)
		}
	}
}
