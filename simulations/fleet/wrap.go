package fleet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/agent"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// coordTransport is the coordinator's transport as the simulator sees it:
// every publish passes through unchanged, except tasks for devices that
// are unreachable in that round (dropouts, unavailable devices), which
// vanish as they would on a real network. Tasks, acknowledgements and
// model manifests are recorded in the tracker.
type coordTransport struct {
	transport.Transport
	f *Fleet
}

func (c *coordTransport) Publish(ctx context.Context, topic string, payload []byte, opts transport.PublishOptions) error {
	f := c.f
	p, perr := topics.Parse(topic)
	switch {
	case perr != nil || p.Kind == topics.KindBlob:
		// Blob chunks are counted as the logical bytes of what they carry.
	case topic == f.manifestTopic && len(payload) > 0:
		if env, err := wire.Open(payload, f.limits); err == nil {
			if m, ok := env.Msg.(*fedgepb.ModelManifest); ok {
				f.manifestPublished(m, len(payload))
			}
		}
	case p.Direction == "global":
		f.track.update(func() { f.track.down += int64(len(payload)) * int64(f.connected()) })
	case p.Device != "" && p.Direction == "in":
		dev, known := f.index[p.Device]
		if known && p.Kind == topics.KindTask {
			if !f.taskPublished(dev, payload) {
				return nil // the device is unreachable this round
			}
		}
		if known && p.Kind == topics.KindAck {
			if env, err := wire.Open(payload, f.limits); err == nil {
				if a, ok := env.Msg.(*fedgepb.Ack); ok {
					f.track.update(func() {
						delete(f.track.awaiting, devRound{dev, a.RoundId})
						if !a.Accepted && a.Reason == "late" {
							f.track.late[a.RoundId]++
						}
					})
				}
			}
		}
		f.track.update(func() { f.track.down += int64(len(payload)) })
	}
	t0 := time.Now()
	err := c.Transport.Publish(ctx, topic, payload, opts)
	f.pubs.note(time.Since(t0))
	return err
}

// pubTimes sums the time the coordinator spends in its transport's
// Publish (a QoS 1 publish over MQTT waits for the broker's PUBACK).
type pubTimes struct {
	mu         sync.Mutex
	n          int
	total, max time.Duration
}

func (p *pubTimes) note(d time.Duration) {
	p.mu.Lock()
	p.n++
	p.total += d
	p.max = max(p.max, d)
	p.mu.Unlock()
}

// reset returns the counts so far and starts again.
func (p *pubTimes) reset() (n int, total, longest time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, total, longest = p.n, p.total, p.max
	p.n, p.total, p.max = 0, 0, 0
	return n, total, longest
}

// taskPublished records a task for dev and reports whether it reaches the
// device.
func (f *Fleet) taskPublished(dev int, payload []byte) bool {
	env, err := wire.Open(payload, f.limits)
	if err != nil {
		return true
	}
	t, ok := env.Msg.(*fedgepb.RoundTask)
	if !ok || t.Kind != fedgepb.TaskKind_TASK_KIND_TRAIN {
		return true
	}
	now := f.clk.Now()
	round := int(t.RoundId)
	reachable := f.profile.Available(dev, round, now.Sub(f.start))
	if drop, _ := f.profile.DropsOut(dev, round); drop {
		reachable = false
	}
	storm := false
	f.track.update(func() {
		storm = f.stormTask(t.RoundId)
		if !reachable {
			f.track.dropped[t.RoundId]++
			return
		}
		f.track.tasks[dev]++
		f.track.taskAt[devRound{dev, t.RoundId}] = now.UnixNano()
		f.taskInfo[devRound{dev, t.RoundId}] = taskInfo{epochs: int(t.GetTrain().GetEpochs()), maxSamples: int(t.GetTrain().GetMaxSamples()), bytes: len(payload)}
	})
	if storm {
		go f.runStorm(f.runCtx)
	}
	return reachable
}

// manifestPublished marks every connected device as installing m and
// counts what each downloads: the manifest, the weights, and the module
// the first time.
func (f *Fleet) manifestPublished(m *fedgepb.ModelManifest, size int) {
	f.warmCache(m)
	f.track.update(func() {
		f.modelBytes = int(m.WeightsLength)
		for i, d := range f.devices {
			if d.connected && d.installed < m.Version {
				f.track.installs[i] = m.Version
				f.track.down += int64(size) + int64(m.WeightsLength)
				if d.installed == 0 {
					f.track.down += int64(m.WasmLength)
				}
			}
		}
	})
}

// taskInfo is what the simulator remembers of a task to time its answer.
type taskInfo struct {
	epochs, maxSamples, bytes int
}

// deviceTransport is one simulated device's transport: updates are taken
// out of the stream, corrupted if the device attacks, and handed to the
// scheduler, which delivers them when the device's simulated compute and
// link time has passed on the virtual clock.
type deviceTransport struct {
	transport.Transport
	f   *Fleet
	dev int
}

func (d *deviceTransport) Publish(ctx context.Context, topic string, payload []byte, opts transport.PublishOptions) error {
	f := d.f
	dv := &f.devices[d.dev]
	switch topic {
	case dv.updateTopic:
		env, err := wire.Open(payload, f.limits)
		if err != nil {
			break
		}
		u, ok := env.Msg.(*fedgepb.Update)
		if !ok {
			break
		}
		key := devRound{d.dev, u.RoundId}
		dup := false
		f.track.update(func() {
			if f.track.seen[key] {
				dup = true
				return
			}
			f.track.seen[key] = true
			if f.track.tasks[d.dev]--; f.track.tasks[d.dev] <= 0 {
				delete(f.track.tasks, d.dev)
			}
		})
		if dup {
			return nil // a resend of an update the simulator already holds or delivered
		}
		if payload, err = f.corrupt(d.dev, env, u, payload); err != nil {
			return fmt.Errorf("fleet: device %d: %w", d.dev, err)
		}
		f.hold(d.dev, key, topic, payload, u)
		return nil
	case dv.statusTopic:
		if env, err := wire.Open(payload, f.limits); err == nil {
			if st, ok := env.Msg.(*fedgepb.Status); ok && st.RoundId != 0 {
				// A refused task: the device answered without an update.
				f.track.update(func() {
					if f.track.tasks[d.dev]--; f.track.tasks[d.dev] <= 0 {
						delete(f.track.tasks, d.dev)
					}
				})
			}
		}
	}
	if p, err := topics.Parse(topic); err == nil && p.Kind != topics.KindBlob {
		f.track.update(func() { f.track.up += int64(len(payload)) })
	}
	return d.Transport.Publish(ctx, topic, payload, opts)
}

// trackedModels tells the tracker when a device has installed a model.
type trackedModels struct {
	agent.ModelStore
	f   *Fleet
	dev int
}

func (m trackedModels) Install(mod agent.Model) error {
	err := m.ModelStore.Install(mod)
	v := mod.Manifest.GetVersion()
	m.f.track.update(func() {
		dv := &m.f.devices[m.dev]
		if err == nil && v > dv.installed {
			dv.installed = v
		}
		if w, ok := m.f.track.installs[m.dev]; ok && w <= v {
			delete(m.f.track.installs, m.dev)
		}
	})
	return err
}

// held is an update on its way to the coordinator.
type held struct {
	at    time.Time
	seq   uint64
	dev   int
	key   devRound
	topic string
	msg   []byte
	blob  int // delta blob bytes fetched by the coordinator
}
