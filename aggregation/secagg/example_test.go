package secagg_test

import (
	"crypto/ed25519"
	"fmt"

	"github.com/fedge-dev/fedge/aggregation/secagg"
)

// Example drives a five-client round the way a transport driver would:
// deliver each server message to its client, hand the reply to the server,
// and Advance when the stage is complete (or its deadline passed). Client
// 4 goes silent after sharing its keys; the sum covers the other four.
func Example() {
	const n = 5
	keys := make([]ed25519.PrivateKey, n)
	cfg := secagg.Config{Round: 1, N: n, Degree: n - 1, Threshold: 3, Dim: 2, Clip: 1, MaxWeight: 10,
		DeviceKeys: make([]ed25519.PublicKey, n)}
	for i := range keys {
		seed := make([]byte, ed25519.SeedSize)
		seed[0] = byte(i + 1)
		keys[i] = ed25519.NewKeyFromSeed(seed)
		cfg.DeviceKeys[i] = keys[i].Public().(ed25519.PublicKey)
	}
	server, _ := secagg.NewServer(cfg)
	clients := make([]*secagg.Client, n)
	for i := range clients {
		clients[i], _ = secagg.NewClient(cfg, uint32(i), keys[i], nil) // nil: crypto/rand
		msg, _ := clients[i].AdvertiseKeys()
		_ = server.Receive(uint32(i), msg)
	}
	for server.Stage() < secagg.StageDone {
		out, err := server.Advance()
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, o := range out {
			c := clients[o.To]
			var reply []byte
			switch server.Stage() {
			case secagg.StageShareKeys:
				reply, err = c.ShareKeys(o.Payload)
			case secagg.StageMaskedInputCollection:
				if o.To == 4 {
					continue // dropped
				}
				// Client i trained on 10*(i+1) samples; FedAvg weights by them.
				reply, err = c.MaskedInput(o.Payload, []float32{float32(o.To) / 10, 0.5}, float64(o.To+1))
			case secagg.StageConsistencyCheck:
				reply, err = c.ConsistencyCheck(o.Payload)
			case secagg.StageUnmasking:
				reply, err = c.Unmask(o.Payload)
			}
			if err == nil {
				err = server.Receive(o.To, reply)
			}
			if err != nil {
				fmt.Println(err)
			}
		}
	}
	res, _ := server.Result()
	mean := res.Mean()
	fmt.Printf("survivors %v, weighted mean [%.4f %.4f]\n", res.Survivors, mean[0], mean[1])
	// Output: survivors [0 1 2 3], weighted mean [0.2000 0.5000]
}
