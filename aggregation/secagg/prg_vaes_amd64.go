//go:build !purego

package secagg

import "golang.org/x/sys/cpu"

// haveVAES reports AES-NI, AVX2 and VAES (the CPUID bit x/sys/cpu calls
// HasAVX512VAES; it sets it only where AVX-512 is enabled, so CPUs with
// 256-bit VAES but no AVX-512 take the portable path).
var haveVAES = cpu.X86.HasAES && cpu.X86.HasAVX2 && cpu.X86.HasAVX512VAES

// expandKey256AESNI writes the 15 AES-256 round keys of key to rk.
//
//go:noescape
func expandKey256AESNI(key *[32]byte, rk *[15][16]byte)

// ctrMaskVAES adds (or subtracts) n*256 bytes of AES-256-CTR keystream,
// read as little-endian uint32s, to acc[0:64n]; see prg_vaes_amd64.s.
//
//go:noescape
func ctrMaskVAES(rk *vaesKey, ctr *[32]byte, acc *uint32, n int, sub bool)
