//go:build !amd64

package aggregation

func allFinite(v []float32) bool { return allFiniteGeneric(v) }

func axpy(s []float64, d []float32, w float64) { axpyGeneric(s, d, w) }
