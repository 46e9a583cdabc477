package aggregation_test

import (
	"errors"
	"fmt"

	"github.com/fedge-dev/fedge/aggregation"
)

// The coordinator's streaming round: configure, fold updates in as they
// arrive, apply at quorum.
func Example_streamingRound() {
	strategy, err := aggregation.NewFedAvg(aggregation.FedAvgConfig{
		Common: aggregation.Common{
			Train:         aggregation.TrainConfig{LocalEpochs: 1, BatchSize: 32, LearningRate: 0.1},
			TrainSampling: aggregation.Sampling{Fraction: 0.5, MinClients: 2, Seed: 42},
			SampleCap:     1000,
		},
	})
	if err != nil {
		panic(err)
	}
	global := []float32{1, 1}
	tasks, _ := strategy.ConfigureTrain(1, []string{"dev-a", "dev-b", "dev-c", "dev-d"})
	acc, _ := strategy.NewAccumulator(len(global))
	for i, task := range tasks {
		// Each arriving update is validated and folded in; a bad one is
		// rejected with the device named and the sum left untouched.
		delta := []float32{float32(i + 1), -1}
		if err := acc.Add(task.Client, delta, 100); err != nil {
			fmt.Println("rejected:", err)
		}
	}
	err = acc.Add("dev-x", []float32{1, 2, 3}, 100)
	var ce *aggregation.ClientError
	fmt.Println(errors.As(err, &ce), ce.Client, errors.Is(err, aggregation.ErrDimension))
	summary, _ := strategy.ApplyAggregate(1, global, acc.Aggregate())
	fmt.Println(len(tasks), summary.Clients, global)
	// Output:
	// true dev-x true
	// 2 2 [2.5 0]
}

// Secure aggregation reveals only the weighted sum; sum-based strategies
// finish from it, robust ones refuse.
func Example_fromSecureSum() {
	fedavg, _ := aggregation.NewFedAvg(aggregation.FedAvgConfig{})
	global := []float32{0, 0}
	sum := aggregation.Aggregate{Sum: []float64{30, -60}, TotalWeight: 30, Clients: 3}
	if _, err := fedavg.ApplyAggregate(5, global, sum); err != nil {
		panic(err)
	}
	fmt.Println(global)

	bulyan, _ := aggregation.NewRobust(aggregation.RobustConfig{Aggregator: aggregation.Bulyan{F: 1}})
	_, err := aggregation.RequireStreaming(bulyan)
	fmt.Println(err)
	// Output:
	// [1 -2]
	// strategy bulyan(f=1): strategy is not sum-based
}
