/* logreg: multinomial logistic (softmax) regression, y = softmax(x W + b).
 * Dimensions come from fedge_setup (default 784 inputs, 10 classes). */
#define MODEL_NAME "logreg"
#include "abi.h"


static int model_configure(int input_len, int classes) {
	if (input_len == 0) input_len = 784;
	if (classes == 0) classes = 10;
	if (classes < 2 || classes > 4096 || input_len > (1 << 24)) return FEDGE_EINVAL;
	if ((long long)input_len * classes + classes > 0x0fffffff) return FEDGE_EINVAL;
	g_input_len = input_len;
	g_classes = classes;
	g_nparams = input_len * classes + classes;
	if (input_len == 784) {
		g_shape[0] = 28, g_shape[1] = 28, g_shape[2] = 1;
	} else {
		g_shape[0] = input_len, g_shape[1] = 1, g_shape[2] = 1;
	}
	return FEDGE_OK;
}

static int model_alloc(int max_batch) {
	(void)max_batch;
	return FEDGE_OK;
}

static void model_tensors(void) {
	int w[2] = {g_input_len, g_classes}, b[1] = {g_classes};
	u32 off = meta_tensor("w", 0, 2, w);
	meta_tensor("b", off, 1, b);
}

static void model_init(void) {
	init_dense(g_params, g_params + g_input_len * g_classes, g_input_len, g_classes, 0);
}

static void model_forward(int n) {
	const float *w = g_params, *b = g_params + g_input_len * g_classes;
	gemm(n, g_classes, g_input_len, g_inputs, g_input_len, 1, w, g_classes, 1, g_logits, g_classes, 0);
	add_bias(g_logits, b, n, g_classes);
}

static void model_backward(int n) {
	float *dw = g_grads, *db = g_grads + g_input_len * g_classes;
	/* dW = X^T dZ */
	gemm(g_input_len, g_classes, n, g_inputs, 1, g_input_len, g_dlogits, g_classes, 1, dw, g_classes, 0);
	bias_grad(db, g_dlogits, n, g_classes);
}
