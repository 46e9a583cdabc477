package aggregation

import "golang.org/x/sys/cpu"

var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func axpyAVX2(s *float64, d *float32, n int, w float64)

//go:noescape
func nonFiniteAVX2(d *float32, n int) bool

// kernelBlock is the element count the vector kernels consume per loop.
const kernelBlock = 16

func allFinite(v []float32) bool {
	n := len(v) &^ (kernelBlock - 1)
	if useAVX2 && n > 0 {
		if nonFiniteAVX2(&v[0], n) {
			return false
		}
		return allFiniteGeneric(v[n:])
	}
	return allFiniteGeneric(v)
}

func axpy(s []float64, d []float32, w float64) {
	s = s[:len(d)]
	n := len(d) &^ (kernelBlock - 1)
	if useAVX2 && n > 0 {
		axpyAVX2(&s[0], &d[0], n, w)
		axpyGeneric(s[n:], d[n:], w)
		return
	}
	axpyGeneric(s, d, w)
}
