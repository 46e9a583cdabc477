/* gemm.h: cache-blocked, register-tiled single-precision matrix multiply on
 * wasm SIMD128 (f32x4), shared by every reference model.
 *
 *   C[M x N] = (acc ? C : 0) + alpha * A[M x K] * B[K x N]
 *
 * A(i,p) is A[i*ars + p*acs] and B(p,j) is B[p*brs + j*bcs], so transposed
 * operands cost nothing extra: they are absorbed by packing. C is row-major
 * with row stride ldc. Blocks of A (MC x KC) are packed into zero-padded
 * MR-row panels; B is read in place when row-major (bcs == 1) and packed
 * into NR-column panels otherwise. The 5x8 micro-kernel keeps ten f32x4
 * accumulators in registers (5 rows: batch 10 fills two panels exactly).
 *
 * Loop shape matters under the host: it runs modules with wazero's
 * WithCloseOnContextDone, which inserts a deadline check (a call that makes
 * live vector registers be saved) at every loop header, and every memory
 * access is bounds-checked. So hot loops do a lot per iteration (the kernel
 * is unrolled sixteen times) and load four A values at once and splat them
 * with shuffles rather than loading each. */
#ifndef FEDGE_GEMM_H
#define FEDGE_GEMM_H

#include <wasm_simd128.h>

#define GEMM_MR 5
#define GEMM_NR 8
#define GEMM_KC 256
#define GEMM_MC 80
#define GEMM_NC 512

/* A panels hold every value splatted to a full f32x4 (four copies), so the
 * kernel broadcasts by a plain load: the host compiles a lane shuffle to
 * two table lookups and a merge, several times the cost of a load. */
static float gemm_apack[GEMM_MC * GEMM_KC * 4] __attribute__((aligned(16)));
static float gemm_bpack[GEMM_KC * (GEMM_NC + GEMM_NR)] __attribute__((aligned(16)));
static float gemm_out[GEMM_MR * GEMM_NR] __attribute__((aligned(16)));

/* transpose4 stores the transpose of the 4x4 block in rows r0..r3 to d,
 * d+ds, d+2ds, d+3ds. */
static inline void transpose4(v128_t r0, v128_t r1, v128_t r2, v128_t r3, float *d, int ds) {
	v128_t t0 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5);
	v128_t t1 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5);
	v128_t t2 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7);
	v128_t t3 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);
	wasm_v128_store(d, wasm_i64x2_shuffle(t0, t1, 0, 2));
	wasm_v128_store(d + ds, wasm_i64x2_shuffle(t0, t1, 1, 3));
	wasm_v128_store(d + 2 * ds, wasm_i64x2_shuffle(t2, t3, 0, 2));
	wasm_v128_store(d + 3 * ds, wasm_i64x2_shuffle(t2, t3, 1, 3));
}

/* gemm_pack_a packs mc x kc of A into MR-row panels of splatted values:
 * for each k the MR values of one column follow each other, each as four
 * copies. Rows past mc are zero. */
static void gemm_pack_a(int mc, int kc, const float *A, int ars, int acs, float *dst) {
	for (int i = 0; i < mc; i += GEMM_MR) {
		int mr = mc - i < GEMM_MR ? mc - i : GEMM_MR;
		const float *a = A + i * ars;
		if (mr == GEMM_MR) {
#pragma clang loop unroll_count(8)
			for (int p = 0; p < kc; p++) {
				const float *src = a + p * acs;
				wasm_v128_store(dst, wasm_v128_load32_splat(src));
				wasm_v128_store(dst + 4, wasm_v128_load32_splat(src + ars));
				wasm_v128_store(dst + 8, wasm_v128_load32_splat(src + 2 * ars));
				wasm_v128_store(dst + 12, wasm_v128_load32_splat(src + 3 * ars));
				wasm_v128_store(dst + 16, wasm_v128_load32_splat(src + 4 * ars));
				dst += 4 * GEMM_MR;
			}
			continue;
		}
		for (int p = 0; p < kc; p++) {
			const float *src = a + p * acs;
			for (int r = 0; r < GEMM_MR; r++)
				wasm_v128_store(dst + 4 * r, r < mr ? wasm_v128_load32_splat(src + r * ars) : wasm_f32x4_splat(0));
			dst += 4 * GEMM_MR;
		}
	}
}

/* gemm_pack_b packs kc x nc of B into NR-column panels: for each k the NR
 * values of one row are adjacent. Columns past nc are zero. */
static void gemm_pack_b(int kc, int nc, const float *B, int brs, int bcs, float *dst) {
	for (int j = 0; j < nc; j += GEMM_NR) {
		int nr = nc - j < GEMM_NR ? nc - j : GEMM_NR;
		const float *b = B + j * bcs;
		int p = 0;
		if (nr == GEMM_NR && bcs == 1) {
			/* row-major B: two vectors per row */
#pragma clang loop unroll_count(16)
			for (; p < kc; p++) {
				const float *s = b + p * brs;
				wasm_v128_store(dst, wasm_v128_load(s));
				wasm_v128_store(dst + 4, wasm_v128_load(s + 4));
				dst += GEMM_NR;
			}
		} else if (nr == GEMM_NR && brs == 1) {
			/* column-major B (a transposed operand): transpose 4x4 blocks */
#pragma clang loop unroll_count(4)
			for (; p + 4 <= kc; p += 4) {
				const float *s = b + p;
				transpose4(wasm_v128_load(s), wasm_v128_load(s + bcs), wasm_v128_load(s + 2 * bcs),
				           wasm_v128_load(s + 3 * bcs), dst, GEMM_NR);
				transpose4(wasm_v128_load(s + 4 * bcs), wasm_v128_load(s + 5 * bcs), wasm_v128_load(s + 6 * bcs),
				           wasm_v128_load(s + 7 * bcs), dst + 4, GEMM_NR);
				dst += 4 * GEMM_NR;
			}
		}
		for (; p < kc; p++) {
			const float *src = b + p * brs;
			for (int c = 0; c < GEMM_NR; c++) dst[c] = c < nr ? src[c * bcs] : 0.0f;
			dst += GEMM_NR;
		}
	}
}

/* One k step of the 5x8 micro-kernel. Steps run from the highest offset
 * down, and within a step from the last row, so the first load of a block
 * has the largest offset from each base pointer: the host then proves every
 * later access of the block in bounds and checks only once. */
/* GEMM_ORDER pins the accumulators at the end of each step. Without it,
 * clang's stackifier evaluates each accumulator's whole chain of adds as one
 * expression tree, one accumulator after the other, keeping every loaded
 * value of the block live at once; the host's register allocator then
 * spills almost all of them. */
#define GEMM_ORDER()                                                                                           \
	__asm__("" : "+r"(c00), "+r"(c01), "+r"(c10), "+r"(c11), "+r"(c20), "+r"(c21), "+r"(c30), "+r"(c31), \
	        "+r"(c40), "+r"(c41))
#define GEMM_FMA(c, a, b) c = wasm_f32x4_add(c, wasm_f32x4_mul(a, b))
#define GEMM_STEP(o)                                                                                            \
	{                                                                                                       \
		v128_t b1 = wasm_v128_load(b + GEMM_NR * (o) + 4), b0 = wasm_v128_load(b + GEMM_NR * (o)), ar;  \
		ar = wasm_v128_load(a + 4 * GEMM_MR * (o) + 16);                                                \
		GEMM_FMA(c40, ar, b0);                                                                          \
		GEMM_FMA(c41, ar, b1);                                                                          \
		ar = wasm_v128_load(a + 4 * GEMM_MR * (o) + 12);                                                \
		GEMM_FMA(c30, ar, b0);                                                                          \
		GEMM_FMA(c31, ar, b1);                                                                          \
		ar = wasm_v128_load(a + 4 * GEMM_MR * (o) + 8);                                                 \
		GEMM_FMA(c20, ar, b0);                                                                          \
		GEMM_FMA(c21, ar, b1);                                                                          \
		ar = wasm_v128_load(a + 4 * GEMM_MR * (o) + 4);                                                 \
		GEMM_FMA(c10, ar, b0);                                                                          \
		GEMM_FMA(c11, ar, b1);                                                                          \
		ar = wasm_v128_load(a + 4 * GEMM_MR * (o));                                                     \
		GEMM_FMA(c00, ar, b0);                                                                          \
		GEMM_FMA(c01, ar, b1);                                                                          \
		GEMM_ORDER();                                                                                   \
	}
#define GEMM_STEPS2(o) GEMM_STEP((o) + 1) GEMM_STEP(o)
#define GEMM_STEPS4(o) GEMM_STEPS2((o) + 2) GEMM_STEPS2(o)
#define GEMM_STEPS8(o) GEMM_STEPS4((o) + 4) GEMM_STEPS4(o)
#define GEMM_STEPS16(o) GEMM_STEPS8((o) + 8) GEMM_STEPS8(o)

/* The micro-kernel's accumulators live in registers only inside
 * loop-free code: the host calls a deadline check at every loop header,
 * and its register allocator then keeps every value live across the loop
 * in memory. So each gemm_block<k> below runs k steps without a loop,
 * starting from and returning to the tile in acc, and gemm_kernel loops
 * over them. Steps run from the highest k down. */
#define GEMM_LOADACC(t)                                                                                        \
	v128_t c00 = wasm_v128_load(t), c01 = wasm_v128_load(t + 4), c10 = wasm_v128_load(t + 8),           \
	       c11 = wasm_v128_load(t + 12), c20 = wasm_v128_load(t + 16), c21 = wasm_v128_load(t + 20),     \
	       c30 = wasm_v128_load(t + 24), c31 = wasm_v128_load(t + 28), c40 = wasm_v128_load(t + 32),     \
	       c41 = wasm_v128_load(t + 36)
#define GEMM_STOREACC(t)                                                                                       \
	wasm_v128_store(t, c00), wasm_v128_store(t + 4, c01), wasm_v128_store(t + 8, c10),                   \
	    wasm_v128_store(t + 12, c11), wasm_v128_store(t + 16, c20), wasm_v128_store(t + 20, c21),        \
	    wasm_v128_store(t + 24, c30), wasm_v128_store(t + 28, c31), wasm_v128_store(t + 32, c40),        \
	    wasm_v128_store(t + 36, c41)
static __attribute__((noinline)) void gemm_block32(const float *a, const float *b, float *t) {
	GEMM_LOADACC(t);
	GEMM_STEPS16(16) GEMM_STEPS16(0) GEMM_STOREACC(t);
}

/* gemm_tail runs the last r < 32 steps (from the tile t when from_tile,
 * else from zero) and adds (or stores, when acc is 0) alpha times the
 * mr x nr corner of the result into C. */
static __attribute__((noinline)) void gemm_tail(int r, const float *a, const float *b, float *t, int from_tile,
                                                float *C, int ldc, int mr, int nr, int acc, float alpha) {
	v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
	       c31 = c00, c40 = c00, c41 = c00;
	if (from_tile) {
		c00 = wasm_v128_load(t), c01 = wasm_v128_load(t + 4), c10 = wasm_v128_load(t + 8);
		c11 = wasm_v128_load(t + 12), c20 = wasm_v128_load(t + 16), c21 = wasm_v128_load(t + 20);
		c30 = wasm_v128_load(t + 24), c31 = wasm_v128_load(t + 28), c40 = wasm_v128_load(t + 32);
		c41 = wasm_v128_load(t + 36);
	}
	const float *a0 = a, *b0_ = b;
	int top = r;
	if (r & 16) {
		top -= 16;
		a = a0 + 4 * GEMM_MR * top, b = b0_ + GEMM_NR * top;
		GEMM_STEPS16(0)
	}
	if (r & 8) {
		top -= 8;
		a = a0 + 4 * GEMM_MR * top, b = b0_ + GEMM_NR * top;
		GEMM_STEPS8(0)
	}
	if (r & 4) {
		top -= 4;
		a = a0 + 4 * GEMM_MR * top, b = b0_ + GEMM_NR * top;
		GEMM_STEPS4(0)
	}
	if (r & 2) {
		top -= 2;
		a = a0 + 4 * GEMM_MR * top, b = b0_ + GEMM_NR * top;
		GEMM_STEPS2(0)
	}
	if (r & 1) {
		a = a0, b = b0_;
		GEMM_STEP(0)
	}
	if (alpha != 1.0f) {
		v128_t s = wasm_f32x4_splat(alpha);
		c00 = wasm_f32x4_mul(c00, s), c01 = wasm_f32x4_mul(c01, s), c10 = wasm_f32x4_mul(c10, s);
		c11 = wasm_f32x4_mul(c11, s), c20 = wasm_f32x4_mul(c20, s), c21 = wasm_f32x4_mul(c21, s);
		c30 = wasm_f32x4_mul(c30, s), c31 = wasm_f32x4_mul(c31, s), c40 = wasm_f32x4_mul(c40, s);
		c41 = wasm_f32x4_mul(c41, s);
	}
	if (mr == GEMM_MR && nr == GEMM_NR) {
		float *r0 = C, *r1 = C + ldc, *r2 = C + 2 * ldc, *r3 = C + 3 * ldc, *r4 = C + 4 * ldc;
		if (acc) {
			c00 = wasm_f32x4_add(c00, wasm_v128_load(r0));
			c01 = wasm_f32x4_add(c01, wasm_v128_load(r0 + 4));
			c10 = wasm_f32x4_add(c10, wasm_v128_load(r1));
			c11 = wasm_f32x4_add(c11, wasm_v128_load(r1 + 4));
			c20 = wasm_f32x4_add(c20, wasm_v128_load(r2));
			c21 = wasm_f32x4_add(c21, wasm_v128_load(r2 + 4));
			c30 = wasm_f32x4_add(c30, wasm_v128_load(r3));
			c31 = wasm_f32x4_add(c31, wasm_v128_load(r3 + 4));
			c40 = wasm_f32x4_add(c40, wasm_v128_load(r4));
			c41 = wasm_f32x4_add(c41, wasm_v128_load(r4 + 4));
		}
		wasm_v128_store(r0, c00);
		wasm_v128_store(r0 + 4, c01);
		wasm_v128_store(r1, c10);
		wasm_v128_store(r1 + 4, c11);
		wasm_v128_store(r2, c20);
		wasm_v128_store(r2 + 4, c21);
		wasm_v128_store(r3, c30);
		wasm_v128_store(r3 + 4, c31);
		wasm_v128_store(r4, c40);
		wasm_v128_store(r4 + 4, c41);
		return;
	}
	float *u = t;
	wasm_v128_store(u + 0, c00);
	wasm_v128_store(u + 4, c01);
	wasm_v128_store(u + 8, c10);
	wasm_v128_store(u + 12, c11);
	wasm_v128_store(u + 16, c20);
	wasm_v128_store(u + 20, c21);
	wasm_v128_store(u + 24, c30);
	wasm_v128_store(u + 28, c31);
	wasm_v128_store(u + 32, c40);
	wasm_v128_store(u + 36, c41);
	for (int i = 0; i < mr; i++) {
		for (int j = 0; j < nr; j++) {
			float v = u[i * GEMM_NR + j];
			C[i * ldc + j] = acc ? C[i * ldc + j] + v : v;
		}
	}
}

/* gemm_kernel multiplies a packed MR x kc panel of A by a packed kc x NR
 * panel of B and adds (or stores, when acc is 0) alpha times the mr x nr
 * corner into C. */
static void gemm_kernel(int kc, const float *a, const float *b, float *C, int ldc, int mr, int nr, int acc,
                        float alpha) {
	float *t = gemm_out;
	int p = kc, tile = 0;
	if (p >= 32) {
		v128_t z = wasm_f32x4_splat(0);
		wasm_v128_store(t, z), wasm_v128_store(t + 4, z), wasm_v128_store(t + 8, z), wasm_v128_store(t + 12, z);
		wasm_v128_store(t + 16, z), wasm_v128_store(t + 20, z), wasm_v128_store(t + 24, z);
		wasm_v128_store(t + 28, z), wasm_v128_store(t + 32, z), wasm_v128_store(t + 36, z);
		tile = 1;
		for (; p >= 32; p -= 32, a += 32 * 4 * GEMM_MR, b += 32 * GEMM_NR) gemm_block32(a, b, t);
	}
	gemm_tail(p, a, b, t, tile, C, ldc, mr, nr, acc, alpha);
}

static void gemm_scaled(int M, int N, int K, const float *A, int ars, int acs, const float *B, int brs, int bcs,
                        float *C, int ldc, int acc, float alpha) {
	if (K == 0) {
		if (!acc)
			for (int i = 0; i < M; i++)
				for (int j = 0; j < N; j++) C[i * ldc + j] = 0.0f;
		return;
	}
	for (int jc = 0; jc < N; jc += GEMM_NC) {
		int nc = N - jc < GEMM_NC ? N - jc : GEMM_NC;
		for (int pc = 0; pc < K; pc += GEMM_KC) {
			int kc = K - pc < GEMM_KC ? K - pc : GEMM_KC;
			int first = pc == 0 ? acc : 1;
			gemm_pack_b(kc, nc, B + pc * brs + jc * bcs, brs, bcs, gemm_bpack);
			for (int ic = 0; ic < M; ic += GEMM_MC) {
				int mc = M - ic < GEMM_MC ? M - ic : GEMM_MC;
				gemm_pack_a(mc, kc, A + ic * ars + pc * acs, ars, acs, gemm_apack);
				for (int jr = 0; jr < nc; jr += GEMM_NR) {
					int nr = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
#pragma clang loop unroll_count(2)
					for (int ir = 0; ir < mc; ir += GEMM_MR) {
						int mr = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
						gemm_kernel(kc, gemm_apack + 4 * ir * kc, gemm_bpack + jr * kc, C + (ic + ir) * ldc + jc + jr,
						            ldc, mr, nr, first, alpha);
					}
				}
			}
		}
	}
}

static __attribute__((unused)) void gemm(int M, int N, int K, const float *A, int ars, int acs, const float *B,
                                         int brs, int bcs, float *C, int ldc, int acc) {
	gemm_scaled(M, N, K, A, ars, acs, B, brs, bcs, C, ldc, acc, 1.0f);
}

#endif
