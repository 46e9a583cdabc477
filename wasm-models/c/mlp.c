/* mlp: the FedAvg paper's "2NN", 784-200-200-10 with ReLU, 199,210
 * parameters: fc1.w[784x200] fc1.b[200] fc2.w[200x200] fc2.b[200]
 * fc3.w[200x10] fc3.b[10]. */
#define MODEL_NAME "mlp"
#define MODEL_FUSED_UPDATE
#include "abi.h"

enum { IN = 784, H = 200, OUT = 10 };
enum { W1 = 0, B1 = W1 + IN * H, W2 = B1 + H, B2 = W2 + H * H, W3 = B2 + H, B3 = W3 + H * OUT, NP = B3 + OUT };

static float *h1, *h2, *d1, *d2;

static int model_configure(int input_len, int classes) {
	if ((input_len && input_len != IN) || (classes && classes != OUT)) return FEDGE_EINVAL;
	g_input_len = IN;
	g_classes = OUT;
	g_nparams = NP;
	g_shape[0] = 28, g_shape[1] = 28, g_shape[2] = 1;
	return FEDGE_OK;
}

static int model_alloc(int max_batch) {
	u32 n = (u32)max_batch * H;
	h1 = falloc_f(n), h2 = falloc_f(n), d1 = falloc_f(n), d2 = falloc_f(n);
	return h1 && h2 && d1 && d2 ? FEDGE_OK : FEDGE_ENOMEM;
}

static void model_tensors(void) {
	int w1[2] = {IN, H}, w2[2] = {H, H}, w3[2] = {H, OUT}, bh[1] = {H}, bo[1] = {OUT};
	u32 off = meta_tensor("fc1.w", 0, 2, w1);
	off = meta_tensor("fc1.b", off, 1, bh);
	off = meta_tensor("fc2.w", off, 2, w2);
	off = meta_tensor("fc2.b", off, 1, bh);
	off = meta_tensor("fc3.w", off, 2, w3);
	meta_tensor("fc3.b", off, 1, bo);
}

static void model_init(void) {
	init_dense(g_params + W1, g_params + B1, IN, H, 1);
	init_dense(g_params + W2, g_params + B2, H, H, 1);
	init_dense(g_params + W3, g_params + B3, H, OUT, 0);
}

static void model_forward(int n) {
	const float *p = g_params;
	gemm(n, H, IN, g_inputs, IN, 1, p + W1, H, 1, h1, H, 0);
	add_bias(h1, p + B1, n, H);
	relu(h1, n * H);
	gemm(n, H, H, h1, H, 1, p + W2, H, 1, h2, H, 0);
	add_bias(h2, p + B2, n, H);
	relu(h2, n * H);
	gemm(n, OUT, H, h2, H, 1, p + W3, OUT, 1, g_logits, OUT, 0);
	add_bias(g_logits, p + B3, n, OUT);
}

static void model_backward(int n) {
	const float *p = g_params;
	float *g = g_grads;
	gemm(H, OUT, n, h2, 1, H, g_dlogits, OUT, 1, g + W3, OUT, 0);
	bias_grad(g + B3, g_dlogits, n, OUT);
	gemm(n, H, OUT, g_dlogits, OUT, 1, p + W3, 1, OUT, d2, H, 0);
	relu_backward(d2, h2, n * H);
	gemm(H, H, n, h1, 1, H, d2, H, 1, g + W2, H, 0);
	bias_grad(g + B2, d2, n, H);
	gemm(n, H, H, d2, H, 1, p + W2, 1, H, d1, H, 0);
	relu_backward(d1, h1, n * H);
	gemm(IN, H, n, g_inputs, 1, IN, d1, H, 1, g + W1, H, 0);
	bias_grad(g + B1, d1, n, H);
}

/* update_layer applies one layer's step: the FedProx shrink (mu > 0), then
 * W += -lr * A^T D (A: the layer's n x in input, D: its n x out output
 * gradient) and b -= lr * sum(D). Called after D was propagated through
 * the old W. */
static void update_layer(int n, int w, int b, int in, int out, const float *a, const float *d, float lr, float mu) {
	float *p = g_params;
	if (mu > 0.0f) prox_shrink(p + w, g_global + w, in * out + out, lr, mu);
	gemm_scaled(in, out, n, a, 1, in, d, out, 1, p + w, out, 1, -lr);
	bias_grad(g_grads + b, d, n, out);
	for (int j = 0; j < out; j++) p[b + j] -= lr * g_grads[b + j];
}

static void model_update(int n, float lr, float mu) {
	const float *p = g_params;
	gemm(n, H, OUT, g_dlogits, OUT, 1, p + W3, 1, OUT, d2, H, 0);
	relu_backward(d2, h2, n * H);
	update_layer(n, W3, B3, H, OUT, h2, g_dlogits, lr, mu);
	gemm(n, H, H, d2, H, 1, p + W2, 1, H, d1, H, 0);
	relu_backward(d1, h1, n * H);
	update_layer(n, W2, B2, H, H, h1, d2, lr, mu);
	update_layer(n, W1, B1, IN, H, g_inputs, d1, lr, mu);
}
