package fleet

import (
	"context"
	"sync"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	"github.com/fedge-dev/fedge/simulations/behavior"
	"github.com/fedge-dev/fedge/simulations/report"
	"github.com/fedge-dev/fedge/simulations/scenario"
)

// Secure aggregation scenarios.
//
// The coordinator and the agents run the real protocol (coordinator/server
// secure.go, edgeagent/agent secure.go) over the simulated network. What
// changes is what a dropout means: a device selected in a secure round
// gets its task and trains, then stops answering at one of the protocol's
// five stages (advertise keys, share keys, masked input, consistency check,
// unmasking), the one at which its drop fraction from simulations/behavior
// falls (stage = floor(5 * fraction)). The same devices drop in the same
// rounds as in a plain run with the same seed; the plain run, which
// fleetsim also makes for a secure scenario (Out/baseline-plain), never
// gives them the task. Devices that drop after their masked input arrived
// are in the secure sum (the protocol recovers without them), so a secure
// round aggregates somewhat more updates than the plain one.
//
// Timing under the virtual clock: training takes no virtual time before a
// device advertises its keys; its compute and link time delay its masked
// input instead (the simulator holds it like a plain update). Stages that
// wait for a dropped device end at their deadline (secure.go in
// coordinator/server), so secure rounds with dropouts last longer in fleet
// time than plain ones.

// secureSim is the simulator's bookkeeping of secure rounds.
type secureSim struct {
	f       *Fleet
	profile behavior.Profile // with the scenario's dropout rate
	mu      sync.Mutex
	dropAt  map[devRound]int  // protocol stage from which a device is silent
	spoke   map[devRound]bool // the device answered its task (advertised keys)
}

// secureSetup prepares a secure run: dropouts are taken out of the
// profile wrap.go applies to tasks and applied by the secure wrappers.
func (f *Fleet) secureSetup() {
	if !f.sc.Secure.Enabled {
		return
	}
	f.secure = &secureSim{f: f, profile: f.profile, dropAt: map[devRound]int{}, spoke: map[devRound]bool{}}
	f.profile.Dropout = 0
}

// secureRequest adds the scenario's secure aggregation to the run request.
func (f *Fleet) secureRequest(req *admin.StartRequest) {
	if s := f.sc.Secure; s.Enabled {
		req.Secure, req.SecureThreshold, req.SecureDegree, req.SecureClipRange = true, s.Threshold, s.Degree, s.ClipRange
	}
}

// stage returns the protocol stage from which dev is silent in round
// (5: never).
func (s *secureSim) stage(dev int, round uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.dropAt[devRound{dev, round}]; ok {
		return st
	}
	return 5
}

// secureCoordTransport sits under coordTransport: it decides dropouts when
// a task goes out and counts the stage messages devices must answer.
type secureCoordTransport struct {
	transport.Transport
	s *secureSim
}

func (f *Fleet) secureCoord(tr transport.Transport) transport.Transport {
	if f.secure == nil {
		return tr
	}
	return &secureCoordTransport{Transport: tr, s: f.secure}
}

func (c *secureCoordTransport) Publish(ctx context.Context, topic string, payload []byte, opts transport.PublishOptions) error {
	s, f := c.s, c.s.f
	if p, err := topics.Parse(topic); err == nil && p.Direction == "in" && (p.Kind == topics.KindTask || p.Kind == topics.KindSecAgg) {
		if dev, known := f.index[p.Device]; known {
			if env, err := wire.Open(payload, f.limits); err == nil {
				switch m := env.Msg.(type) {
				case *fedgepb.RoundTask:
					if m.Kind == fedgepb.TaskKind_TASK_KIND_TRAIN {
						if drop, at := s.profile.DropsOut(dev, int(m.RoundId)); drop {
							st := min(int(at*5), 4)
							s.mu.Lock()
							s.dropAt[devRound{dev, m.RoundId}] = st
							s.mu.Unlock()
							f.track.update(func() { f.track.dropped[m.RoundId]++ })
						}
					}
				case *fedgepb.SecAggMessage:
					// Stage k (k >= 2) must be answered unless the device is silent by then;
					// the task stands for the setup (stage 1).
					if stage := int(m.Stage) - 1; stage >= 1 && stage < s.stage(dev, m.RoundId) {
						f.track.update(func() { f.track.tasks[dev]++ })
					}
				}
			}
		}
	}
	return c.Transport.Publish(ctx, topic, payload, opts)
}

// secureDeviceTransport sits above deviceTransport: it silences a dropped
// device from its stage on and counts the answers it gives.
type secureDeviceTransport struct {
	transport.Transport // the device's deviceTransport
	s                   *secureSim
	dev                 int
	secagg, update      string
	status              string
}

func (f *Fleet) secureDevice(dev int, tr transport.Transport) transport.Transport {
	if f.secure == nil {
		return tr
	}
	id := f.devices[dev].id
	return &secureDeviceTransport{Transport: tr, s: f.secure, dev: dev,
		secagg: topics.DeviceOut(FleetID, id, topics.KindSecAgg), update: topics.DeviceOut(FleetID, id, topics.KindUpdate),
		status: topics.DeviceOut(FleetID, id, topics.KindStatus)}
}

func (d *secureDeviceTransport) Publish(ctx context.Context, topic string, payload []byte, opts transport.PublishOptions) error {
	s, f := d.s, d.s.f
	if topic != d.secagg && topic != d.update && topic != d.status {
		return d.Transport.Publish(ctx, topic, payload, opts)
	}
	env, err := wire.Open(payload, f.limits)
	if err != nil {
		return d.Transport.Publish(ctx, topic, payload, opts)
	}
	switch m := env.Msg.(type) {
	case *fedgepb.SecAggMessage:
		stage, key := int(m.Stage)-1, devRound{d.dev, m.RoundId}
		silent := stage >= s.stage(d.dev, m.RoundId)
		if stage == 0 {
			s.mu.Lock()
			first := !s.spoke[key]
			s.spoke[key] = true
			s.mu.Unlock()
			if first && silent {
				// The task is answered by silence.
				f.track.update(func() { f.untask(d.dev) })
			}
		}
		if silent {
			return nil
		}
		err := d.Transport.Publish(ctx, topic, payload, opts)
		f.track.update(func() { f.untask(d.dev) })
		return err
	case *fedgepb.Update:
		if m.Codec == fedgepb.Codec_CODEC_SECAGG && s.stage(d.dev, m.RoundId) <= 2 {
			return nil // silent before its masked input: never counted as expected
		}
	case *fedgepb.Status:
		s.mu.Lock()
		spoke := s.spoke[devRound{d.dev, m.RoundId}]
		s.mu.Unlock()
		if m.RoundId != 0 && spoke {
			// A device that gave up on a secure round after advertising its
			// keys (the protocol went on without it): nothing is expected of it.
			return nil
		}
	}
	return d.Transport.Publish(ctx, topic, payload, opts)
}

// untask marks one expected answer of dev as given; call with track.mu held.
func (f *Fleet) untask(dev int) {
	if f.track.tasks[dev]--; f.track.tasks[dev] <= 0 {
		delete(f.track.tasks, dev)
	}
}

// SecureSummary is summary.json of a secure scenario: the run's summary,
// its plain baseline's final accuracy and the difference.
type SecureSummary struct {
	report.Summary
	Secure                SecureSettings `json:"secure"`
	BaselineFinalAccuracy float64        `json:"baseline_final_accuracy"`
	// SecureMinusPlain is final_accuracy - baseline_final_accuracy.
	SecureMinusPlain float64 `json:"secure_minus_plain"`
}

// SecureSettings are the scenario's secure aggregation settings.
type SecureSettings struct {
	Threshold float64 `json:"threshold"`
	Degree    int     `json:"degree"`
	ClipRange float64 `json:"clip_range"`
}

// writeSecureSummary rewrites summary.json with the baseline comparison.
func writeSecureSummary(dir string, sc *scenario.Scenario, sum report.Summary, plain *report.Summary) error {
	s := SecureSummary{Summary: sum, Secure: SecureSettings{Threshold: sc.Secure.Threshold, Degree: sc.Secure.Degree, ClipRange: sc.Secure.ClipRange}, BaselineFinalAccuracy: plain.FinalAccuracy,
		SecureMinusPlain: sum.FinalAccuracy - plain.FinalAccuracy}
	return writeJSON(dir, "summary.json", s)
}
