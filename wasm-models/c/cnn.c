/* cnn: the FedAvg paper's MNIST CNN, NHWC layout with 'same' padding:
 * conv 5x5x32 + ReLU, 2x2 max-pool, conv 5x5x64 + ReLU, 2x2 max-pool,
 * FC 3136->512 + ReLU, FC 512->10, softmax. 1,663,370 parameters:
 * conv1.w[5,5,1,32] conv1.b[32] conv2.w[5,5,32,64] conv2.b[64]
 * fc1.w[3136,512] fc1.b[512] fc2.w[512,10] fc2.b[10].
 *
 * Both convolutions are im2col + the shared gemm over many samples at once
 * (the whole batch for conv1, chunks of CH samples for conv2), so each
 * weight matrix is packed once per call rather than once per sample. The
 * images are kept zero-padded (32x32 for conv1, 18x18x32 for conv2), so
 * im2col is a copy of contiguous rows without bounds tests. Bias, ReLU and
 * max-pooling are one pass; backward, un-pooling, the ReLU mask and the
 * bias gradient are one pass too, and pooling is undone from the saved
 * activations (first maximum wins, as in a scan) instead of saved indices.
 * Every loop body does a lot of work: the host calls a deadline check at
 * every loop header (see gemm.h). */
#define MODEL_NAME "cnn"
#include "abi.h"

enum { S = 28, C1 = 32, S2 = 14, C2 = 64, S3 = 7, F = S3 * S3 * C2, H = 512, OUT = 10, K = 5, KK = K * K };
enum { P1 = S + 4, P2 = S2 + 4, CH = 8 }; /* padded sizes; samples per conv2 chunk */
enum { A1 = S * S * C1, PP1 = P2 * P2 * C1, A2 = S2 * S2 * C2, COLS1 = S * S * KK, COLS2 = S2 * S2 * KK * C1 };
enum {
	W1 = 0,
	B1 = W1 + K * K * C1,
	W2 = B1 + C1,
	B2 = W2 + K * K * C1 * C2,
	W3 = B2 + C2,
	B3 = W3 + F * H,
	W4 = B3 + H,
	B4 = W4 + H * OUT,
	NP = B4 + OUT
};

/* forward state, kept for backward: cols1 (im2col of every input), a1 and
 * a2 (activations after ReLU), p1 (pooled, padded), p2 (pooled, the FC
 * input), h3 (FC hidden). Scratch: xpad, cols2, dcols, dp1 (padded), da1,
 * da2, d3, dp2. */
static float *xpad, *cols1, *a1, *p1, *a2, *p2, *h3, *d3, *dp2, *cols2, *dcols, *dp1, *da1, *da2;

static void zero(float *p, u32 n) {
	for (u32 i = 0; i < n; i++) p[i] = 0.0f;
}

static int model_configure(int input_len, int classes) {
	if ((input_len && input_len != S * S) || (classes && classes != OUT)) return FEDGE_EINVAL;
	g_input_len = S * S;
	g_classes = OUT;
	g_nparams = NP;
	g_shape[0] = S, g_shape[1] = S, g_shape[2] = 1;
	return FEDGE_OK;
}

static int model_alloc(int max_batch) {
	u32 b = (u32)max_batch, c = b < CH ? b : CH;
	xpad = falloc_f(P1 * P1 + 4), cols1 = falloc_f(b * COLS1), a1 = falloc_f(b * A1), p1 = falloc_f(b * PP1);
	a2 = falloc_f(b * A2), p2 = falloc_f(b * F), h3 = falloc_f(b * H), d3 = falloc_f(b * H), dp2 = falloc_f(b * F);
	cols2 = falloc_f(c * COLS2), dcols = falloc_f(c * COLS2), dp1 = falloc_f(c * PP1), da1 = falloc_f(c * A1);
	da2 = falloc_f(b * A2);
	if (!(xpad && cols1 && a1 && p1 && a2 && p2 && h3 && d3 && dp2 && cols2 && dcols && dp1 && da1 && da2))
		return FEDGE_ENOMEM;
	/* the borders of the padded images stay zero from here on */
	zero(xpad, P1 * P1 + 4);
	zero(p1, b * PP1);
	return FEDGE_OK;
}

static void model_tensors(void) {
	int w1[4] = {K, K, 1, C1}, w2[4] = {K, K, C1, C2}, w3[2] = {F, H}, w4[2] = {H, OUT};
	int b1[1] = {C1}, b2[1] = {C2}, b3[1] = {H}, b4[1] = {OUT};
	u32 off = meta_tensor("conv1.w", 0, 4, w1);
	off = meta_tensor("conv1.b", off, 1, b1);
	off = meta_tensor("conv2.w", off, 4, w2);
	off = meta_tensor("conv2.b", off, 1, b2);
	off = meta_tensor("fc1.w", off, 2, w3);
	off = meta_tensor("fc1.b", off, 1, b3);
	off = meta_tensor("fc2.w", off, 2, w4);
	meta_tensor("fc2.b", off, 1, b4);
}

static void model_init(void) {
	init_dense(g_params + W1, g_params + B1, K * K, C1, 1);
	init_dense(g_params + W2, g_params + B2, K * K * C1, C2, 1);
	init_dense(g_params + W3, g_params + B3, F, H, 1);
	init_dense(g_params + W4, g_params + B4, H, OUT, 0);
}


/* im2col1 writes the 5x5 patches of the n inputs (28x28, padded into
 * xpad) as rows of 25 values: one row per output pixel. */
static void im2col1(int n) {
	for (int s = 0; s < n; s++) {
		const float *x = g_inputs + s * S * S;
		for (int y = 0; y < S; y++) __builtin_memcpy(xpad + (y + 2) * P1 + 2, x + y * S, S * 4);
		float *d = cols1 + s * COLS1;
		for (int oy = 0; oy < S; oy++) {
			const float *r = xpad + oy * P1;
			for (int ox = 0; ox < S; ox += 2, d += 2 * KK) {
				const float *q = r + ox;
				/* two pixels: ten 4-float rows and ten last floats */
#define ROW(ky, o)                                                                                              \
	wasm_v128_store(d + (o) + (ky) * K, wasm_v128_load(q + (o) / KK + (ky) * P1));                          \
	d[(o) + (ky) * K + 4] = q[(o) / KK + (ky) * P1 + 4];
				ROW(4, 25) ROW(3, 25) ROW(2, 25) ROW(1, 25) ROW(0, 25)
				ROW(4, 0) ROW(3, 0) ROW(2, 0) ROW(1, 0) ROW(0, 0)
#undef ROW
			}
		}
	}
}

/* im2col2 writes the 5x5x32 patches of samples [s0, s0+c) of p1 as rows of
 * 800 values, one per output pixel: five copies of 160 contiguous floats. */
static void im2col2(int s0, int c) {
	float *d = cols2;
	for (int s = s0; s < s0 + c; s++) {
		const float *img = p1 + s * PP1;
		for (int oy = 0; oy < S2; oy++)
			for (int ox = 0; ox < S2; ox++, d += KK * C1) {
				const float *q = img + (oy * P2 + ox) * C1;
				__builtin_memcpy(d + 4 * K * C1, q + 4 * P2 * C1, K * C1 * 4);
				__builtin_memcpy(d + 3 * K * C1, q + 3 * P2 * C1, K * C1 * 4);
				__builtin_memcpy(d + 2 * K * C1, q + 2 * P2 * C1, K * C1 * 4);
				__builtin_memcpy(d + 1 * K * C1, q + 1 * P2 * C1, K * C1 * 4);
				__builtin_memcpy(d, q, K * C1 * 4);
			}
	}
}

/* add160 adds 160 floats of s into d, without a loop. */
static inline void add160(float *d, const float *s) {
#define A4(o) wasm_v128_store(d + (o), wasm_f32x4_add(wasm_v128_load(d + (o)), wasm_v128_load(s + (o))));
#define A32(o) A4(o + 28) A4(o + 24) A4(o + 20) A4(o + 16) A4(o + 12) A4(o + 8) A4(o + 4) A4(o)
	A32(128) A32(96) A32(64) A32(32) A32(0)
#undef A32
#undef A4
}

/* col2im2 adds the patch gradients of c samples back onto the padded
 * 18x18x32 images in dp1 (zeroed first). */
static void col2im2(int c) {
	zero(dp1, (u32)c * PP1);
	const float *d = dcols;
	for (int s = 0; s < c; s++) {
		float *img = dp1 + s * PP1;
		for (int oy = 0; oy < S2; oy++)
			for (int ox = 0; ox < S2; ox++, d += KK * C1) {
				float *q = img + (oy * P2 + ox) * C1;
				add160(q + 4 * P2 * C1, d + 4 * K * C1);
				add160(q + 3 * P2 * C1, d + 3 * K * C1);
				add160(q + 2 * P2 * C1, d + 2 * K * C1);
				add160(q + 1 * P2 * C1, d + 1 * K * C1);
				add160(q, d);
			}
	}
}

/* bias_relu_pool adds the bias to the s x s x c activations a, applies
 * ReLU in place and writes the 2x2 maxima to dst, whose rows are dstride
 * floats apart. c is a multiple of 32. */
static void bias_relu_pool(float *a, const float *bias, int s, int c, float *dst, int dstride) {
	v128_t z = wasm_f32x4_splat(0);
	for (int py = 0; py < s / 2; py++)
		for (int px = 0; px < s / 2; px++)
			for (int ch = 0; ch < c; ch += 32) {
				float *r0 = a + (2 * py * s + 2 * px) * c + ch, *r1 = r0 + s * c, *o = dst + py * dstride + px * c + ch;
				const float *b = bias + ch;
#define P(k)                                                                                                    \
	{                                                                                                       \
		v128_t bv = wasm_v128_load(b + (k));                                                            \
		v128_t v0 = wasm_f32x4_pmax(wasm_f32x4_add(wasm_v128_load(r0 + (k)), bv), z);                   \
		v128_t v1 = wasm_f32x4_pmax(wasm_f32x4_add(wasm_v128_load(r0 + c + (k)), bv), z);               \
		v128_t v2 = wasm_f32x4_pmax(wasm_f32x4_add(wasm_v128_load(r1 + (k)), bv), z);                   \
		v128_t v3 = wasm_f32x4_pmax(wasm_f32x4_add(wasm_v128_load(r1 + c + (k)), bv), z);               \
		wasm_v128_store(r0 + (k), v0);                                                                  \
		wasm_v128_store(r0 + c + (k), v1);                                                              \
		wasm_v128_store(r1 + (k), v2);                                                                  \
		wasm_v128_store(r1 + c + (k), v3);                                                              \
		wasm_v128_store(o + (k), wasm_f32x4_pmax(wasm_f32x4_pmax(v0, v1), wasm_f32x4_pmax(v2, v3)));    \
	}
				P(28) P(24) P(20) P(16) P(12) P(8) P(4) P(0)
#undef P
			}
}

/* unpool_relu_back routes the pooled gradient dp (rows dstride apart) to
 * the first maximum of each 2x2 window of the activations a (pooled values
 * p, same layout as dp), masked by ReLU, writing da (layout of a), and adds
 * da's column sums to db. */
static void unpool_relu_back(const float *a, const float *p, const float *dp, int s, int c, int dstride, float *da,
                             float *db) {
	v128_t z = wasm_f32x4_splat(0);
	for (int py = 0; py < s / 2; py++)
		for (int px = 0; px < s / 2; px++)
			for (int ch = 0; ch < c; ch += 32) {
				int i0 = (2 * py * s + 2 * px) * c + ch, i1 = i0 + s * c, j = py * dstride + px * c + ch;
				const float *r0 = a + i0, *r1 = a + i1, *pv = p + j, *g = dp + j;
				float *d0 = da + i0, *d1 = da + i1, *bg = db + ch;
#define U(k)                                                                                                    \
	{                                                                                                       \
		v128_t m = wasm_v128_load(pv + (k)), gv = wasm_v128_load(g + (k));                              \
		v128_t v0 = wasm_v128_load(r0 + (k)), v1 = wasm_v128_load(r0 + c + (k));                        \
		v128_t v2 = wasm_v128_load(r1 + (k));                                                           \
		gv = wasm_v128_and(gv, wasm_f32x4_gt(m, z));                                                    \
		v128_t e0 = wasm_f32x4_eq(v0, m);                                                               \
		v128_t e1 = wasm_v128_andnot(wasm_f32x4_eq(v1, m), e0);                                         \
		v128_t t = wasm_v128_or(e0, e1);                                                                \
		v128_t e2 = wasm_v128_andnot(wasm_f32x4_eq(v2, m), t);                                          \
		v128_t e3 = wasm_v128_not(wasm_v128_or(t, e2));                                               \
		wasm_v128_store(d0 + (k), wasm_v128_and(gv, e0));                                               \
		wasm_v128_store(d0 + c + (k), wasm_v128_and(gv, e1));                                           \
		wasm_v128_store(d1 + (k), wasm_v128_and(gv, e2));                                               \
		wasm_v128_store(d1 + c + (k), wasm_v128_and(gv, e3));                                           \
		wasm_v128_store(bg + (k), wasm_f32x4_add(wasm_v128_load(bg + (k)), gv));                        \
	}
				U(28) U(24) U(20) U(16) U(12) U(8) U(4) U(0)
#undef U
			}
}

static void model_forward(int n) {
	const float *p = g_params;
	im2col1(n);
	gemm(n * S * S, C1, KK, cols1, KK, 1, p + W1, C1, 1, a1, C1, 0);
	for (int s = 0; s < n; s++)
		bias_relu_pool(a1 + s * A1, p + B1, S, C1, p1 + s * PP1 + (2 * P2 + 2) * C1, P2 * C1);
	for (int s0 = 0; s0 < n; s0 += CH) {
		int c = n - s0 < CH ? n - s0 : CH;
		im2col2(s0, c);
		gemm(c * S2 * S2, C2, KK * C1, cols2, KK * C1, 1, p + W2, C2, 1, a2 + s0 * A2, C2, 0);
	}
	for (int s = 0; s < n; s++) bias_relu_pool(a2 + s * A2, p + B2, S2, C2, p2 + s * F, S3 * C2);
	gemm(n, H, F, p2, F, 1, p + W3, H, 1, h3, H, 0);
	add_bias(h3, p + B3, n, H);
	relu(h3, n * H);
	gemm(n, OUT, H, h3, H, 1, p + W4, OUT, 1, g_logits, OUT, 0);
	add_bias(g_logits, p + B4, n, OUT);
}

static void model_backward(int n) {
	const float *p = g_params;
	float *g = g_grads;
	gemm(H, OUT, n, h3, 1, H, g_dlogits, OUT, 1, g + W4, OUT, 0);
	bias_grad(g + B4, g_dlogits, n, OUT);
	gemm(n, H, OUT, g_dlogits, OUT, 1, p + W4, 1, OUT, d3, H, 0);
	relu_backward(d3, h3, n * H);
	gemm(F, H, n, p2, 1, F, d3, H, 1, g + W3, H, 0);
	bias_grad(g + B3, d3, n, H);
	gemm(n, F, H, d3, H, 1, p + W3, 1, H, dp2, F, 0);
	zero(g + B1, C1);
	zero(g + B2, C2);
	for (int s = 0; s < n; s++)
		unpool_relu_back(a2 + s * A2, p2 + s * F, dp2 + s * F, S2, C2, S3 * C2, da2 + s * A2, g + B2);
	for (int s0 = 0; s0 < n; s0 += CH) {
		int c = n - s0 < CH ? n - s0 : CH, first = s0 == 0;
		im2col2(s0, c);
		gemm(KK * C1, C2, c * S2 * S2, cols2, 1, KK * C1, da2 + s0 * A2, C2, 1, g + W2, C2, !first);
		gemm(c * S2 * S2, KK * C1, C2, da2 + s0 * A2, C2, 1, p + W2, 1, C2, dcols, KK * C1, 0);
		col2im2(c);
		for (int s = 0; s < c; s++) {
			const float *pp = p1 + (s0 + s) * PP1 + (2 * P2 + 2) * C1, *dd = dp1 + s * PP1 + (2 * P2 + 2) * C1;
			unpool_relu_back(a1 + (s0 + s) * A1, pp, dd, S, C1, P2 * C1, da1 + s * A1, g + B1);
		}
		gemm(KK, C1, c * S * S, cols1 + s0 * COLS1, 1, KK, da1, C1, 1, g + W1, C1, !first);
	}
}
