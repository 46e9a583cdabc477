/* cnn: the FedAvg paper's MNIST CNN, NHWC layout with 'same' padding:
 * conv 5x5x32 + ReLU, 2x2 max-pool, conv 5x5x64 + ReLU, 2x2 max-pool,
 * FC 3136->512 + ReLU, FC 512->10, softmax. 1,663,370 parameters:
 * conv1.w[5,5,1,32] conv1.b[32] conv2.w[5,5,32,64] conv2.b[64]
 * fc1.w[3136,512] fc1.b[512] fc2.w[512,10] fc2.b[10].
 * Convolutions are im2col + the shared gemm, one sample at a time. */
#define MODEL_NAME "cnn"
#include "abi.h"

enum { S = 28, C1 = 32, S2 = 14, C2 = 64, S3 = 7, F = S3 * S3 * C2, H = 512, OUT = 10, K = 5 };
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

static float *a1, *p1, *a2, *p2, *h3, *d3, *dp2, *cols, *dcols, *da1, *da2, *dp1;
static int *i1, *i2;

static int model_configure(int input_len, int classes) {
	if ((input_len && input_len != S * S) || (classes && classes != OUT)) return FEDGE_EINVAL;
	g_input_len = S * S;
	g_classes = OUT;
	g_nparams = NP;
	g_shape[0] = S, g_shape[1] = S, g_shape[2] = 1;
	return FEDGE_OK;
}

static int model_alloc(int max_batch) {
	u32 b = (u32)max_batch;
	a1 = falloc_f(b * S * S * C1), p1 = falloc_f(b * S2 * S2 * C1), i1 = (int *)falloc_f(b * S2 * S2 * C1);
	a2 = falloc_f(b * S2 * S2 * C2), p2 = falloc_f(b * F), i2 = (int *)falloc_f(b * F);
	h3 = falloc_f(b * H), d3 = falloc_f(b * H), dp2 = falloc_f(b * F);
	cols = falloc_f(S * S * K * K > S2 * S2 * K * K * C1 ? S * S * K * K : S2 * S2 * K * K * C1);
	dcols = falloc_f(S2 * S2 * K * K * C1);
	da1 = falloc_f(S * S * C1), da2 = falloc_f(S2 * S2 * C2), dp1 = falloc_f(S2 * S2 * C1);
	return a1 && p1 && i1 && a2 && p2 && i2 && h3 && d3 && dp2 && cols && dcols && da1 && da2 && dp1 ? FEDGE_OK
	                                                                                                 : FEDGE_ENOMEM;
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

/* im2col writes, for each of the s*s output pixels, the 5x5xc patch around
 * it (zero outside the image) as one row of dst. */
static void im2col(const float *src, int s, int c, float *dst) {
	for (int oy = 0; oy < s; oy++)
		for (int ox = 0; ox < s; ox++)
			for (int ky = 0; ky < K; ky++) {
				int iy = oy + ky - 2;
				for (int kx = 0; kx < K; kx++) {
					int ix = ox + kx - 2;
					if (iy < 0 || iy >= s || ix < 0 || ix >= s) {
						for (int ch = 0; ch < c; ch++) *dst++ = 0.0f;
					} else {
						const float *p = src + (iy * s + ix) * c;
						for (int ch = 0; ch < c; ch++) *dst++ = p[ch];
					}
				}
			}
}

/* col2im adds the patch gradients in cols back onto the s x s x c image. */
static void col2im(const float *cols_, int s, int c, float *dst) {
	for (int i = 0; i < s * s * c; i++) dst[i] = 0.0f;
	for (int oy = 0; oy < s; oy++)
		for (int ox = 0; ox < s; ox++)
			for (int ky = 0; ky < K; ky++) {
				int iy = oy + ky - 2;
				for (int kx = 0; kx < K; kx++) {
					int ix = ox + kx - 2;
					if (iy < 0 || iy >= s || ix < 0 || ix >= s) {
						cols_ += c;
					} else {
						float *p = dst + (iy * s + ix) * c;
						for (int ch = 0; ch < c; ch++) p[ch] += *cols_++;
					}
				}
			}
}

/* maxpool halves an s x s x c image, recording the argmax source index. */
static void maxpool(const float *src, int s, int c, float *dst, int *idx) {
	int h = s / 2;
	for (int py = 0; py < h; py++)
		for (int px = 0; px < h; px++)
			for (int ch = 0; ch < c; ch++) {
				int best = ((2 * py) * s + 2 * px) * c + ch;
				for (int dy = 0; dy < 2; dy++)
					for (int dx = 0; dx < 2; dx++) {
						int j = ((2 * py + dy) * s + 2 * px + dx) * c + ch;
						if (src[j] > src[best]) best = j;
					}
				int o = (py * h + px) * c + ch;
				dst[o] = src[best];
				idx[o] = best;
			}
}

static void unpool(const float *d, const int *idx, int n, float *dst, int dstlen) {
	for (int i = 0; i < dstlen; i++) dst[i] = 0.0f;
	for (int i = 0; i < n; i++) dst[idx[i]] += d[i];
}

static void model_forward(int n) {
	const float *p = g_params;
	for (int s = 0; s < n; s++) {
		float *x = g_inputs + s * S * S, *c1 = a1 + s * S * S * C1, *c2 = a2 + s * S2 * S2 * C2;
		im2col(x, S, 1, cols);
		gemm(S * S, C1, K * K, cols, K * K, 1, p + W1, C1, 1, c1, C1, 0);
		add_bias(c1, p + B1, S * S, C1);
		relu(c1, S * S * C1);
		maxpool(c1, S, C1, p1 + s * S2 * S2 * C1, i1 + s * S2 * S2 * C1);
		im2col(p1 + s * S2 * S2 * C1, S2, C1, cols);
		gemm(S2 * S2, C2, K * K * C1, cols, K * K * C1, 1, p + W2, C2, 1, c2, C2, 0);
		add_bias(c2, p + B2, S2 * S2, C2);
		relu(c2, S2 * S2 * C2);
		maxpool(c2, S2, C2, p2 + s * F, i2 + s * F);
	}
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
	for (int i = W1; i < W3; i++) g[i] = 0.0f;
	float db[C2];
	for (int s = 0; s < n; s++) {
		unpool(dp2 + s * F, i2 + s * F, F, da2, S2 * S2 * C2);
		relu_backward(da2, a2 + s * S2 * S2 * C2, S2 * S2 * C2);
		im2col(p1 + s * S2 * S2 * C1, S2, C1, cols);
		gemm(K * K * C1, C2, S2 * S2, cols, 1, K * K * C1, da2, C2, 1, g + W2, C2, 1);
		bias_grad(db, da2, S2 * S2, C2);
		for (int j = 0; j < C2; j++) g[B2 + j] += db[j];
		gemm(S2 * S2, K * K * C1, C2, da2, C2, 1, p + W2, 1, C2, dcols, K * K * C1, 0);
		col2im(dcols, S2, C1, dp1);
		unpool(dp1, i1 + s * S2 * S2 * C1, S2 * S2 * C1, da1, S * S * C1);
		relu_backward(da1, a1 + s * S * S * C1, S * S * C1);
		im2col(g_inputs + s * S * S, S, 1, cols);
		gemm(K * K, C1, S * S, cols, 1, K * K, da1, C1, 1, g + W1, C1, 1);
		bias_grad(db, da1, S * S, C1);
		for (int j = 0; j < C1; j++) g[B1 + j] += db[j];
	}
}
