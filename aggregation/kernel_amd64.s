#include "textflag.h"

// func axpyAVX2(s *float64, d *float32, n int, w float64)
// n is a positive multiple of 16. s[i] += w*float64(d[i]) with a separate
// multiply and add (no FMA) to match axpyGeneric bit for bit.
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	MOVQ s+0(FP), DI
	MOVQ d+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSD w+24(FP), Y0
	XORQ AX, AX

loop:
	VCVTPS2PD (SI)(AX*4), Y1
	VCVTPS2PD 16(SI)(AX*4), Y2
	VCVTPS2PD 32(SI)(AX*4), Y3
	VCVTPS2PD 48(SI)(AX*4), Y4
	VMULPD Y0, Y1, Y1
	VMULPD Y0, Y2, Y2
	VMULPD Y0, Y3, Y3
	VMULPD Y0, Y4, Y4
	VADDPD (DI)(AX*8), Y1, Y1
	VADDPD 32(DI)(AX*8), Y2, Y2
	VADDPD 64(DI)(AX*8), Y3, Y3
	VADDPD 96(DI)(AX*8), Y4, Y4
	VMOVUPD Y1, (DI)(AX*8)
	VMOVUPD Y2, 32(DI)(AX*8)
	VMOVUPD Y3, 64(DI)(AX*8)
	VMOVUPD Y4, 96(DI)(AX*8)
	ADDQ $16, AX
	CMPQ AX, CX
	JB loop
	VZEROUPPER
	RET

// func nonFiniteAVX2(d *float32, n int) bool
// n is a positive multiple of 16. Reports whether any element has an
// all-ones exponent (NaN or ±Inf).
TEXT ·nonFiniteAVX2(SB), NOSPLIT, $0-17
	MOVQ d+0(FP), SI
	MOVQ n+8(FP), CX
	MOVL $0x7f800000, DX
	MOVQ DX, X0
	VPBROADCASTD X0, Y0
	VPXOR Y5, Y5, Y5
	XORQ AX, AX

floop:
	VPAND (SI)(AX*4), Y0, Y1
	VPAND 32(SI)(AX*4), Y0, Y2
	VPCMPEQD Y0, Y1, Y1
	VPCMPEQD Y0, Y2, Y2
	VPOR Y1, Y5, Y5
	VPOR Y2, Y5, Y5
	ADDQ $16, AX
	CMPQ AX, CX
	JB floop
	VPTEST Y5, Y5
	SETNE ret+16(FP)
	VZEROUPPER
	RET
