//go:build !amd64 || purego

package secagg

const haveVAES = false

func expandKey256AESNI(*[32]byte, *[15][16]byte) { panic("secagg: no VAES on this platform") }

func ctrMaskVAES(*vaesKey, *[32]byte, *uint32, int, bool) {
	panic("secagg: no VAES on this platform")
}
