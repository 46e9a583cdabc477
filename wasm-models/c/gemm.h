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

/* +4: the kernel loads A four floats at a time and may read past the last
 * panel. */
static float gemm_apack[GEMM_MC * GEMM_KC + 4] __attribute__((aligned(16)));
static float gemm_bpack[GEMM_KC * GEMM_NC] __attribute__((aligned(16)));
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

/* gemm_pack_a packs mc x kc of A into MR-row panels: for each k the MR
 * values of one column are adjacent. Rows past mc are zero. */
static void gemm_pack_a(int mc, int kc, const float *A, int ars, int acs, float *dst) {
	for (int i = 0; i < mc; i += GEMM_MR) {
		int mr = mc - i < GEMM_MR ? mc - i : GEMM_MR;
		const float *a = A + i * ars;
		int p = 0;
		if (mr == GEMM_MR && acs == 1) {
			/* row-major A: transpose 4x4 blocks of rows 0-3, then row 4 */
			for (; p + 4 <= kc; p += 4) {
				transpose4(wasm_v128_load(a + p), wasm_v128_load(a + ars + p), wasm_v128_load(a + 2 * ars + p),
				           wasm_v128_load(a + 3 * ars + p), dst, GEMM_MR);
				v128_t r4 = wasm_v128_load(a + 4 * ars + p);
				wasm_v128_store32_lane(dst + 4, r4, 0);
				wasm_v128_store32_lane(dst + 9, r4, 1);
				wasm_v128_store32_lane(dst + 14, r4, 2);
				wasm_v128_store32_lane(dst + 19, r4, 3);
				dst += 4 * GEMM_MR;
			}
		} else if (mr == GEMM_MR && ars == 1) {
			/* column-major A (a transposed operand): rows are adjacent */
#pragma clang loop unroll_count(4)
			for (; p < kc; p++) {
				const float *src = a + p * acs;
				wasm_v128_store(dst, wasm_v128_load(src));
				dst[4] = src[4];
				dst += GEMM_MR;
			}
		}
		for (; p < kc; p++) {
			const float *src = a + p * acs;
			for (int r = 0; r < GEMM_MR; r++) dst[r] = r < mr ? src[r * ars] : 0.0f;
			dst += GEMM_MR;
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
		if (nr == GEMM_NR && brs == 1) {
			/* column-major B (a transposed operand): transpose 4x4 blocks */
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

#define GEMM_FMA(c, a, b) c = wasm_f32x4_add(c, wasm_f32x4_mul(a, b))
#define GEMM_STEP(o)                                                                                            \
	{                                                                                                       \
		v128_t b0 = wasm_v128_load(b + bs * (o)), b1 = wasm_v128_load(b + bs * (o) + 4);                \
		v128_t av = wasm_v128_load(a + GEMM_MR * (o)), ar;                                              \
		ar = wasm_i32x4_shuffle(av, av, 0, 0, 0, 0);                                                    \
		GEMM_FMA(c00, ar, b0);                                                                          \
		GEMM_FMA(c01, ar, b1);                                                                          \
		ar = wasm_i32x4_shuffle(av, av, 1, 1, 1, 1);                                                    \
		GEMM_FMA(c10, ar, b0);                                                                          \
		GEMM_FMA(c11, ar, b1);                                                                          \
		ar = wasm_i32x4_shuffle(av, av, 2, 2, 2, 2);                                                    \
		GEMM_FMA(c20, ar, b0);                                                                          \
		GEMM_FMA(c21, ar, b1);                                                                          \
		ar = wasm_i32x4_shuffle(av, av, 3, 3, 3, 3);                                                    \
		GEMM_FMA(c30, ar, b0);                                                                          \
		GEMM_FMA(c31, ar, b1);                                                                          \
		ar = wasm_v128_load32_splat(a + GEMM_MR * (o) + 4);                                             \
		GEMM_FMA(c40, ar, b0);                                                                          \
		GEMM_FMA(c41, ar, b1);                                                                          \
	}

/* gemm_kernel multiplies a packed MR x kc panel of A by a kc x NR panel of
 * B whose rows are bs floats apart (NR when packed, the row stride when
 * read in place) and adds (or stores, when acc is 0) the mr x nr corner
 * into C. */
static void gemm_kernel(int kc, const float *a, const float *b, int bs, float *C, int ldc, int mr, int nr, int acc,
                        float alpha) {
	v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
	       c31 = c00, c40 = c00, c41 = c00;
	int p = 0;
	for (; p + 16 <= kc; p += 16) {
		GEMM_STEP(0) GEMM_STEP(1) GEMM_STEP(2) GEMM_STEP(3) GEMM_STEP(4) GEMM_STEP(5) GEMM_STEP(6) GEMM_STEP(7)
		GEMM_STEP(8) GEMM_STEP(9) GEMM_STEP(10) GEMM_STEP(11) GEMM_STEP(12) GEMM_STEP(13) GEMM_STEP(14) GEMM_STEP(15)
		a += 16 * GEMM_MR;
		b += 16 * bs;
	}
	if (kc - p >= 8) {
		GEMM_STEP(0) GEMM_STEP(1) GEMM_STEP(2) GEMM_STEP(3) GEMM_STEP(4) GEMM_STEP(5) GEMM_STEP(6) GEMM_STEP(7)
		a += 8 * GEMM_MR;
		b += 8 * bs;
		p += 8;
	}
	if (kc - p >= 4) {
		GEMM_STEP(0) GEMM_STEP(1) GEMM_STEP(2) GEMM_STEP(3)
		a += 4 * GEMM_MR;
		b += 4 * bs;
		p += 4;
	}
	if (kc - p >= 2) {
		GEMM_STEP(0) GEMM_STEP(1)
		a += 2 * GEMM_MR;
		b += 2 * bs;
		p += 2;
	}
	if (kc - p >= 1) {
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
	float *u = gemm_out;
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
		/* Row-major B is read in place, full NR-wide panels at least; only
		 * a partial last panel, or a transposed B, is packed. */
		int direct = bcs == 1 ? nc - nc % GEMM_NR : 0;
		for (int pc = 0; pc < K; pc += GEMM_KC) {
			int kc = K - pc < GEMM_KC ? K - pc : GEMM_KC;
			int first = pc == 0 ? acc : 1;
			const float *bblk = B + pc * brs + jc * bcs;
			if (direct < nc) gemm_pack_b(kc, nc - direct, bblk + direct * bcs, brs, bcs, gemm_bpack);
			for (int ic = 0; ic < M; ic += GEMM_MC) {
				int mc = M - ic < GEMM_MC ? M - ic : GEMM_MC;
				gemm_pack_a(mc, kc, A + ic * ars + pc * acs, ars, acs, gemm_apack);
				for (int jr = 0; jr < nc; jr += GEMM_NR) {
					int nr = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
					const float *bp = jr < direct ? bblk + jr : gemm_bpack + (jr - direct) * kc;
					int bs = jr < direct ? brs : GEMM_NR;
					for (int ir = 0; ir < mc; ir += GEMM_MR) {
						int mr = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
						gemm_kernel(kc, gemm_apack + ir * kc, bp, bs, C + (ic + ir) * ldc + jc + jr, ldc, mr, nr,
						            first, alpha);
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
