package server

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/fedge-dev/fedge/aggregation/codec"
	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/round"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// deltaCases are good and bad encoded deltas for a 4-parameter model.
func deltaCases(t testing.TB) []struct {
	name  string
	c     fedgepb.Codec
	b     []byte
	ok    bool
	short bool // decodes to a wrong shape
} {
	good := encodeF32(t, []float32{1, 2, 3, 4})
	f16, _ := codec.Float16Codec{}.Encode(nil, []float32{1, 2, 3, 4})
	return []struct {
		name  string
		c     fedgepb.Codec
		b     []byte
		ok    bool
		short bool
	}{
		{"float32", fedgepb.Codec_CODEC_FLOAT32, good, true, false},
		{"unspecified means float32", fedgepb.Codec_CODEC_UNSPECIFIED, good, true, false},
		{"float16", fedgepb.Codec_CODEC_FLOAT16, f16, true, false},
		{"header says float32, update says float16", fedgepb.Codec_CODEC_FLOAT16, good, false, false},
		{"secagg not decodable here", fedgepb.Codec_CODEC_SECAGG, good, false, false},
		{"empty", fedgepb.Codec_CODEC_FLOAT32, nil, false, false},
		{"truncated", fedgepb.Codec_CODEC_FLOAT32, good[:len(good)-1], false, false},
		{"other dimension", fedgepb.Codec_CODEC_FLOAT32, encodeF32(t, []float32{1, 2, 3}), true, true},
		{"huge declared dimension", fedgepb.Codec_CODEC_FLOAT32, []byte{1, 1, 0xff, 0xff, 0xff, 0x0f}, true, true},
		{"NaN", fedgepb.Codec_CODEC_FLOAT32, rawF32(4, []float32{1, float32(math.NaN()), 3, 4}), true, false},
	}
}

func TestDecodeDelta(t *testing.T) {
	for _, c := range deltaCases(t) {
		d, err := decodeDelta(c.c, c.b, 4)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v", c.name, err)
			continue
		}
		if err == nil && (len(d) == 4) == c.short {
			t.Errorf("%s: %d values", c.name, len(d))
		}
	}
}

func FuzzDecodeDelta(f *testing.F) {
	for _, c := range deltaCases(f) {
		f.Add(int32(c.c), c.b)
	}
	f.Fuzz(func(t *testing.T, c int32, b []byte) {
		d, err := decodeDelta(fedgepb.Codec(c), b, 4)
		if err == nil && len(d) != 0 && len(d) != 4 {
			t.Fatalf("decoded %d values for a 4-parameter model", len(d))
		}
	})
}

// FuzzStartRequest checks that whatever JSON an admin sends, RunConfig
// either refuses it or returns a configuration the machine accepts.
func FuzzStartRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"mlp","rounds":5}`, `{"model":"mlp","strategy":"fedadam","strategy_config":{"server_lr":0.01}}`,
		`{"model":"mlp","strategy":"krum","strategy_config":{"f":2}}`, `{"model":"mlp","codec":"topk","topk_fraction":0.1}`,
		`{"model":"mlp","target_accuracy":0.9,"federated_eval":true}`, `{"model":"mlp","fraction":2}`,
		`{"model":"mlp","min_clients":5,"max_clients":2}`, `{"model":"mlp","secure":true}`, `{}`,
		`{"model":"mlp","strategy_config":[1]}`, `{"model":"mlp","tags":{"":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var req admin.StartRequest
		if json.Unmarshal(raw, &req) != nil {
			return
		}
		cfg, err := RunConfig(req)
		if err != nil {
			return
		}
		if err := round.ValidateRunConfig(cfg); err != nil {
			t.Fatalf("RunConfig returned an invalid config: %v", err)
		}
		if _, err := NewStrategy(cfg); err != nil {
			t.Fatalf("RunConfig returned an unusable strategy: %v", err)
		}
	})
}

func TestStrategiesBuild(t *testing.T) {
	for _, name := range Strategies() {
		cfg := &fedgepb.RunConfig{Strategy: name}
		st, err := NewStrategy(cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := &strategies{}
		agg, err := s.newAggregator()(cfg, 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		n := 7 // enough for every robust rule with f=1 (bulyan needs 4f+3)
		for i := range n {
			if err := agg.Add(string(rune('a'+i)), []float32{0.5, -0.5}, 10); err != nil {
				t.Fatalf("%s: add: %v", name, err)
			}
		}
		next, err := agg.Finish([]float32{1, 1})
		if err != nil {
			t.Fatalf("%s (%s): finish: %v", name, st.Name(), err)
		}
		if len(next) != 2 || next[0] <= 1 || next[1] >= 1 {
			t.Fatalf("%s: next %v", name, next)
		}
	}
	if len(Strategies()) != 10 {
		t.Fatalf("strategies %v", Strategies())
	}
}
