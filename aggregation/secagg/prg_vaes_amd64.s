//go:build !purego

#include "textflag.h"

// AES-256 round keys with AES-NI (the key-expansion sequence of Intel's AES
// instructions white paper): X1 holds the even round key, X3 the odd one.
#define EXPAND_EVEN(rcon, off) \
	AESKEYGENASSIST $rcon, X3, X2; \
	PSHUFD $0xff, X2, X2; \
	MOVOU X1, X4; \
	PSLLO $4, X4; \
	PXOR X4, X1; \
	PSLLO $4, X4; \
	PXOR X4, X1; \
	PSLLO $4, X4; \
	PXOR X4, X1; \
	PXOR X2, X1; \
	MOVOU X1, off(DI)

#define EXPAND_ODD(off) \
	AESKEYGENASSIST $0x00, X1, X2; \
	PSHUFD $0xaa, X2, X2; \
	MOVOU X3, X4; \
	PSLLO $4, X4; \
	PXOR X4, X3; \
	PSLLO $4, X4; \
	PXOR X4, X3; \
	PSLLO $4, X4; \
	PXOR X4, X3; \
	PXOR X2, X3; \
	MOVOU X3, off(DI)

// func expandKey256AESNI(key *[32]byte, rk *[15][16]byte)
TEXT ·expandKey256AESNI(SB), NOSPLIT, $0-16
	MOVQ  key+0(FP), AX
	MOVQ  rk+8(FP), DI
	MOVOU (AX), X1
	MOVOU 16(AX), X3
	MOVOU X1, (DI)
	MOVOU X3, 16(DI)
	EXPAND_EVEN(0x01, 32)
	EXPAND_ODD(48)
	EXPAND_EVEN(0x02, 64)
	EXPAND_ODD(80)
	EXPAND_EVEN(0x04, 96)
	EXPAND_ODD(112)
	EXPAND_EVEN(0x08, 128)
	EXPAND_ODD(144)
	EXPAND_EVEN(0x10, 160)
	EXPAND_ODD(176)
	EXPAND_EVEN(0x20, 192)
	EXPAND_ODD(208)
	EXPAND_EVEN(0x40, 224)
	RET

// ctrShuf turns a counter lane (domain, n as a little-endian uint64) into
// the AES-CTR counter block domain || big-endian n.
DATA ctrShuf<>+0(SB)/8, $0x0706050403020100
DATA ctrShuf<>+8(SB)/8, $0x08090a0b0c0d0e0f
DATA ctrShuf<>+16(SB)/8, $0x0706050403020100
DATA ctrShuf<>+24(SB)/8, $0x08090a0b0c0d0e0f
GLOBL ctrShuf<>(SB), RODATA|NOPTR, $32

// ctrInc advances both lanes of a counter register by two blocks.
DATA ctrInc<>+0(SB)/8, $0
DATA ctrInc<>+8(SB)/8, $2
DATA ctrInc<>+16(SB)/8, $0
DATA ctrInc<>+24(SB)/8, $2
GLOBL ctrInc<>(SB), RODATA|NOPTR, $32

#define CTR(y) \
	VPSHUFB Y15, Y14, y; \
	VPADDQ  Y13, Y14, Y14

#define ALL8(op, k) \
	op k, Y0, Y0; \
	op k, Y1, Y1; \
	op k, Y2, Y2; \
	op k, Y3, Y3; \
	op k, Y4, Y4; \
	op k, Y5, Y5; \
	op k, Y6, Y6; \
	op k, Y7, Y7

#define ADDTO(y, off) \
	VPADDD  off(DI), y, y; \
	VMOVDQU y, off(DI)

#define SUBFROM(y, off) \
	VMOVDQU off(DI), Y8; \
	VPSUBD  y, Y8, Y8; \
	VMOVDQU Y8, off(DI)

// func ctrMaskVAES(rk *vaesKey, ctr *[32]byte, acc *uint32, n int, sub bool)
//
// Adds (or, if sub, subtracts) n*256 bytes of AES-256-CTR keystream, read as
// little-endian uint32s, to acc[0:64n]. rk holds each round key twice (one
// per 128-bit lane); ctr holds the counters of the first two blocks as
// (domain, little-endian block index) lanes. Sixteen blocks per iteration
// in eight independent registers keep the AES units busy.
TEXT ·ctrMaskVAES(SB), NOSPLIT, $0-33
	MOVQ    rk+0(FP), AX
	MOVQ    ctr+8(FP), BX
	MOVQ    acc+16(FP), DI
	MOVQ    n+24(FP), CX
	MOVBQZX sub+32(FP), DX
	TESTQ   CX, CX
	JZ      done
	VMOVDQU (BX), Y14
	VMOVDQU ctrShuf<>(SB), Y15
	VMOVDQU ctrInc<>(SB), Y13

loop:
	CTR(Y0)
	CTR(Y1)
	CTR(Y2)
	CTR(Y3)
	CTR(Y4)
	CTR(Y5)
	CTR(Y6)
	CTR(Y7)
	ALL8(VPXOR, (AX))
	ALL8(VAESENC, 32(AX))
	ALL8(VAESENC, 64(AX))
	ALL8(VAESENC, 96(AX))
	ALL8(VAESENC, 128(AX))
	ALL8(VAESENC, 160(AX))
	ALL8(VAESENC, 192(AX))
	ALL8(VAESENC, 224(AX))
	ALL8(VAESENC, 256(AX))
	ALL8(VAESENC, 288(AX))
	ALL8(VAESENC, 320(AX))
	ALL8(VAESENC, 352(AX))
	ALL8(VAESENC, 384(AX))
	ALL8(VAESENC, 416(AX))
	ALL8(VAESENCLAST, 448(AX))
	TESTQ DX, DX
	JNZ   subtract
	ADDTO(Y0, 0)
	ADDTO(Y1, 32)
	ADDTO(Y2, 64)
	ADDTO(Y3, 96)
	ADDTO(Y4, 128)
	ADDTO(Y5, 160)
	ADDTO(Y6, 192)
	ADDTO(Y7, 224)
	JMP   next

subtract:
	SUBFROM(Y0, 0)
	SUBFROM(Y1, 32)
	SUBFROM(Y2, 64)
	SUBFROM(Y3, 96)
	SUBFROM(Y4, 128)
	SUBFROM(Y5, 160)
	SUBFROM(Y6, 192)
	SUBFROM(Y7, 224)

next:
	ADDQ $256, DI
	DECQ CX
	JNZ  loop
	VZEROUPPER

done:
	RET
