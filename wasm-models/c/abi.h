/* abi.h: the fedge model ABI version 2 (see ../ABI.md) for C models.
 *
 * A model file includes this header and defines the hooks declared below;
 * this header implements every export, the bump allocator, the metadata
 * writer, the seeded initialiser, softmax cross-entropy and the SGD/FedProx
 * update. No libc: compile with -nostdlib -mbulk-memory. */
#ifndef FEDGE_ABI_H
#define FEDGE_ABI_H

#include <wasm_simd128.h>
#include "gemm.h"

#define EXPORT(name) __attribute__((export_name(name)))

typedef unsigned long long u64;
typedef unsigned int u32;

enum {
	FEDGE_OK = 0,
	FEDGE_EINVAL = -1,    /* argument out of range (batch size, dimensions) */
	FEDGE_ELABEL = -2,    /* a label is outside [0, classes) */
	FEDGE_ESTATE = -3,    /* called before a successful fedge_setup */
	FEDGE_ENOMEM = -4,    /* memory.grow failed */
	FEDGE_ENONFINITE = -5 /* the loss or the parameters became NaN or Inf */
};

/* ---- hooks every model defines ---- */
/* MODEL_NAME must be #defined to a string literal before the include. */
/* model_configure validates the requested dimensions (0 = default) and sets
 * g_input_len, g_classes, g_nparams and the input shape. */
static int model_configure(int input_len, int classes);
/* model_alloc reserves per-batch workspace for up to max_batch samples. */
static int model_alloc(int max_batch);
/* model_tensors writes one "tensor" metadata line per parameter tensor. */
static void model_tensors(void);
/* model_init fills g_params from the seeded generator. */
static void model_init(void);
/* model_forward reads n inputs and writes n x classes logits to g_logits. */
static void model_forward(int n);
/* model_backward reads g_dlogits and writes the gradient to g_grads. */
static void model_backward(int n);
#ifdef MODEL_FUSED_UPDATE
/* model_update reads g_dlogits and applies the SGD/FedProx step of
 * fedge_train to g_params itself (saving a pass over a gradient buffer);
 * model_backward still serves fedge_grad. */
static void model_update(int n, float lr, float mu);
#endif

/* ---- state ---- */
static int g_ready, g_max_batch, g_input_len, g_classes, g_nparams;
static int g_shape[3];
static float *g_params, *g_grads, *g_global, *g_inputs, *g_scores, *g_logits, *g_dlogits;
static int *g_labels;
static float g_result[2];

/* ---- memory ---- */
extern unsigned char __heap_base;
static u32 g_heap;

static void *falloc(u32 bytes) {
	u32 p = (g_heap + 15u) & ~15u;
	u32 end = p + bytes;
	if (end < p) return 0;
	u32 have = (u32)__builtin_wasm_memory_size(0) * 65536u;
	if (end > have) {
		u32 pages = (end - have + 65535u) / 65536u;
		if (__builtin_wasm_memory_grow(0, pages) == (unsigned long)-1) return 0;
	}
	g_heap = end;
	return (void *)p;
}

static float *falloc_f(u32 n) {
	if (n > 0x3fffffffu) return 0;
	return (float *)falloc(n * 4u);
}

/* ---- metadata text ---- */
static char g_meta[4096];
static int g_meta_len;

static void meta_str(const char *s) {
	while (*s && g_meta_len < (int)sizeof g_meta) g_meta[g_meta_len++] = *s++;
}

static void meta_int(u32 v) {
	char buf[12];
	int n = 0;
	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n > 0 && g_meta_len < (int)sizeof g_meta) g_meta[g_meta_len++] = buf[--n];
}

/* meta_tensor writes "tensor name offset d0 [d1 ...]\n" and returns the next
 * offset. */
static u32 meta_tensor(const char *name, u32 offset, int ndims, const int *dims) {
	u32 size = 1;
	meta_str("tensor ");
	meta_str(name);
	meta_str(" ");
	meta_int(offset);
	for (int i = 0; i < ndims; i++) {
		meta_str(" ");
		meta_int((u32)dims[i]);
		size *= (u32)dims[i];
	}
	meta_str("\n");
	return offset + size;
}

/* ---- math without libc ---- */
static float fexp(float x) {
	if (x < -87.0f) return 0.0f;
	if (x > 88.0f) x = 88.0f;
	float fn = __builtin_floorf(x * 1.44269504f + 0.5f);
	float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	union { u32 i; float f; } s = {(u32)((int)fn + 127) << 23};
	return p * s.f;
}

static float flog(float x) {
	if (!(x > 0.0f)) return -1e30f;
	union { float f; u32 i; } u = {x};
	int e = (int)((u.i >> 23) & 0xff) - 127;
	u.i = (u.i & 0x007fffffu) | 0x3f800000u; /* mantissa in [1,2) */
	float m = u.f;
	if (m > 1.41421356f) {
		m *= 0.5f;
		e++;
	}
	float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
	float t = s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11)))));
	return 2.0f * s * (1.0f + t) + (float)e * 0.69314718056f;
}

static int finitef(float x) { return x - x == 0.0f; }

/* ---- seeded initialisation: splitmix64 ---- */
static u64 g_rng;

static u64 rng_next(void) {
	u64 z = (g_rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* init_uniform fills n values uniformly in [-limit, limit). */
static void init_uniform(float *w, int n, float limit) {
	for (int i = 0; i < n; i++) {
		float u = (float)(rng_next() >> 40) * (1.0f / 16777216.0f);
		w[i] = (2.0f * u - 1.0f) * limit;
	}
}

static float fsqrt(float x) { return __builtin_sqrtf(x); }

/* init_dense draws a fan_in x fan_out weight matrix (He-uniform when relu,
 * Glorot-uniform otherwise) and zeroes the bias. */
static void init_dense(float *w, float *b, int fan_in, int fan_out, int relu) {
	float limit = relu ? fsqrt(6.0f / (float)fan_in) : fsqrt(6.0f / (float)(fan_in + fan_out));
	init_uniform(w, fan_in * fan_out, limit);
	for (int i = 0; i < fan_out; i++) b[i] = 0.0f;
}

/* ---- shared layer helpers ----
 * Loops move 64 floats per iteration: each loop iteration costs a deadline
 * check under the host (see gemm.h). */
#define V64(i, body)                                                                                            \
	for (; i + 64 <= n; i += 64) {                                                                          \
		body(i) body(i + 4) body(i + 8) body(i + 12) body(i + 16) body(i + 20) body(i + 24) body(i + 28) \
		body(i + 32) body(i + 36) body(i + 40) body(i + 44) body(i + 48) body(i + 52) body(i + 56)       \
		body(i + 60)                                                                                    \
	}                                                                                                       \
	for (; i + 4 <= n; i += 4) {                                                                            \
		body(i)                                                                                         \
	}

/* y[i] += b[i] for i < n */
static void vadd(float *y, const float *b, int n) {
	int i = 0;
#define B(k) wasm_v128_store(y + (k), wasm_f32x4_add(wasm_v128_load(y + (k)), wasm_v128_load(b + (k))));
	V64(i, B)
#undef B
	for (; i < n; i++) y[i] += b[i];
}

static __attribute__((unused)) void add_bias(float *y, const float *b, int n, int width) {
	for (int r = 0; r < n; r++) vadd(y + r * width, b, width);
}

static __attribute__((unused)) void relu(float *y, int n) {
	int i = 0;
	v128_t z = wasm_f32x4_splat(0);
#define B(k) wasm_v128_store(y + (k), wasm_f32x4_pmax(wasm_v128_load(y + (k)), z));
	V64(i, B)
#undef B
	for (; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

/* relu_backward zeroes gradient entries whose activation was not positive. */
static __attribute__((unused)) void relu_backward(float *dy, const float *y, int n) {
	int i = 0;
	v128_t z = wasm_f32x4_splat(0);
#define B(k) wasm_v128_store(dy + (k), wasm_v128_and(wasm_v128_load(dy + (k)), wasm_f32x4_gt(wasm_v128_load(y + (k)), z)));
	V64(i, B)
#undef B
	for (; i < n; i++)
		if (!(y[i] > 0.0f)) dy[i] = 0.0f;
}

/* bias_grad sums dy over the n rows. */
static __attribute__((unused)) void bias_grad(float *db, const float *dy, int n, int width) {
	for (int j = 0; j < width; j++) db[j] = 0.0f;
	for (int r = 0; r < n; r++) vadd(db, dy + r * width, width);
}

/* prox_shrink applies the FedProx part of an update before the gradient
 * part: w = (1 - lr*mu) * w + lr*mu * w0. */
static __attribute__((unused)) void prox_shrink(float *w, const float *w0, int n, float lr, float mu) {
	int i = 0;
	v128_t keep = wasm_f32x4_splat(1.0f - lr * mu), pull = wasm_f32x4_splat(lr * mu);
#define B(k)                                                                                                    \
	wasm_v128_store(w + (k), wasm_f32x4_add(wasm_f32x4_mul(keep, wasm_v128_load(w + (k))),                  \
	                                        wasm_f32x4_mul(pull, wasm_v128_load(w0 + (k)))));
	V64(i, B)
#undef B
	for (; i < n; i++) w[i] = (1.0f - lr * mu) * w[i] + lr * mu * w0[i];
}

/* sgd: w -= lr * g, or with mu > 0, w -= lr * (g + mu * (w - w0)). */
static void sgd(float *w, const float *g, const float *w0, int n, float lr, float mu) {
	int i = 0;
	v128_t vlr = wasm_f32x4_splat(lr), vmu = wasm_f32x4_splat(mu);
	if (mu > 0.0f) {
#define B(k)                                                                                                    \
	{                                                                                                       \
		v128_t x = wasm_v128_load(w + (k));                                                             \
		v128_t d = wasm_f32x4_add(wasm_v128_load(g + (k)),                                              \
		                          wasm_f32x4_mul(vmu, wasm_f32x4_sub(x, wasm_v128_load(w0 + (k)))));   \
		wasm_v128_store(w + (k), wasm_f32x4_sub(x, wasm_f32x4_mul(vlr, d)));                            \
	}
		V64(i, B)
#undef B
		for (; i < n; i++) w[i] -= lr * (g[i] + mu * (w[i] - w0[i]));
		return;
	}
#define B(k) wasm_v128_store(w + (k), wasm_f32x4_sub(wasm_v128_load(w + (k)), wasm_f32x4_mul(vlr, wasm_v128_load(g + (k)))));
	V64(i, B)
#undef B
	for (; i < n; i++) w[i] -= lr * g[i];
}

/* ---- exports ---- */
EXPORT("fedge_abi_version") int fedge_abi_version(void) { return 2; }

EXPORT("fedge_setup") int fedge_setup(int max_batch, int input_len, int classes) {
	g_ready = 0;
	if (max_batch < 1 || max_batch > 65536 || input_len < 0 || classes < 0) return FEDGE_EINVAL;
	int rc = model_configure(input_len, classes);
	if (rc) return rc;
	g_heap = (u32)&__heap_base;
	g_max_batch = max_batch;
	u32 nlog = (u32)max_batch * (u32)g_classes;
	g_params = falloc_f((u32)g_nparams);
	g_grads = falloc_f((u32)g_nparams);
	g_global = falloc_f((u32)g_nparams);
	g_inputs = falloc_f((u32)max_batch * (u32)g_input_len);
	g_labels = (int *)falloc_f((u32)max_batch);
	g_scores = falloc_f(nlog);
	g_logits = falloc_f(nlog);
	g_dlogits = falloc_f(nlog);
	if (!g_params || !g_grads || !g_global || !g_inputs || !g_labels || !g_scores || !g_logits || !g_dlogits)
		return FEDGE_ENOMEM;
	rc = model_alloc(max_batch);
	if (rc) return rc;
	for (int i = 0; i < g_nparams; i++) g_params[i] = g_global[i] = 0.0f;
	g_meta_len = 0;
	meta_str("fedge-model 1\nname ");
	meta_str(MODEL_NAME);
	meta_str("\ninput ");
	meta_int((u32)g_shape[0]);
	meta_str(" ");
	meta_int((u32)g_shape[1]);
	meta_str(" ");
	meta_int((u32)g_shape[2]);
	meta_str("\nclasses ");
	meta_int((u32)g_classes);
	meta_str("\nparams ");
	meta_int((u32)g_nparams);
	meta_str("\nmax_batch ");
	meta_int((u32)max_batch);
	meta_str("\n");
	model_tensors();
	g_ready = 1;
	return FEDGE_OK;
}

EXPORT("fedge_meta_ptr") int fedge_meta_ptr(void) { return (int)g_meta; }
EXPORT("fedge_meta_len") int fedge_meta_len(void) { return g_meta_len; }
EXPORT("fedge_param_count") int fedge_param_count(void) { return g_nparams; }
EXPORT("fedge_params") int fedge_params(void) { return (int)g_params; }
EXPORT("fedge_global") int fedge_global(void) { return (int)g_global; }
EXPORT("fedge_inputs") int fedge_inputs(void) { return (int)g_inputs; }
EXPORT("fedge_labels") int fedge_labels(void) { return (int)g_labels; }
EXPORT("fedge_scores") int fedge_scores(void) { return (int)g_scores; }
EXPORT("fedge_result") int fedge_result(void) { return (int)g_result; }
EXPORT("fedge_grads") int fedge_grads(void) { return (int)g_grads; }

EXPORT("fedge_init") int fedge_init(long long seed) {
	if (!g_ready) return FEDGE_ESTATE;
	g_rng = (u64)seed;
	model_init();
	return FEDGE_OK;
}

static int check_batch(int n) {
	if (!g_ready) return FEDGE_ESTATE;
	if (n < 1 || n > g_max_batch) return FEDGE_EINVAL;
	for (int i = 0; i < n; i++)
		if (g_labels[i] < 0 || g_labels[i] >= g_classes) return FEDGE_ELABEL;
	return FEDGE_OK;
}

/* softmax_xent turns n rows of logits into probabilities in g_scores, stores
 * the summed loss and the number of correct argmax predictions in g_result,
 * and, when grad is set, writes (p - onehot) * scale into g_dlogits. */
static void softmax_xent(int n, int grad, float scale) {
	float loss = 0.0f, correct = 0.0f;
	int k = g_classes;
	for (int i = 0; i < n; i++) {
		const float *z = g_logits + i * k;
		float *p = g_scores + i * k;
		int arg = 0;
		float mx = z[0];
		for (int j = 1; j < k; j++)
			if (z[j] > mx) {
				mx = z[j];
				arg = j;
			}
		float sum = 0.0f;
		for (int j = 0; j < k; j++) sum += (p[j] = fexp(z[j] - mx));
		float inv = 1.0f / sum;
		for (int j = 0; j < k; j++) p[j] *= inv;
		if (g_labels) {
			int y = g_labels[i];
			loss += flog(sum) - (z[y] - mx);
			if (arg == y) correct += 1.0f;
			if (grad) {
				float *d = g_dlogits + i * k;
				for (int j = 0; j < k; j++) d[j] = p[j] * scale;
				d[y] -= scale;
			}
		}
	}
	g_result[0] = loss;
	g_result[1] = correct;
}

EXPORT("fedge_train") int fedge_train(int n, float lr, float mu) {
	int rc = check_batch(n);
	if (rc) return rc;
	if (!finitef(lr) || !finitef(mu) || mu < 0.0f) return FEDGE_EINVAL;
	model_forward(n);
	softmax_xent(n, 1, 1.0f / (float)n);
	if (!finitef(g_result[0])) return FEDGE_ENONFINITE;
#ifdef MODEL_FUSED_UPDATE
	model_update(n, lr, mu);
#else
	model_backward(n);
	sgd(g_params, g_grads, g_global, g_nparams, lr, mu);
#endif
	return FEDGE_OK;
}

/* fedge_grad writes scale times the gradient of the summed loss of the
 * first n samples to fedge_grads, without changing the parameters. The host
 * splits a batch of N over several instances, passes scale = 1/N to each and
 * sums their gradients: the batch-mean gradient of fedge_train. */
EXPORT("fedge_grad") int fedge_grad(int n, float scale) {
	int rc = check_batch(n);
	if (rc) return rc;
	if (!finitef(scale)) return FEDGE_EINVAL;
	model_forward(n);
	softmax_xent(n, 1, scale);
	if (!finitef(g_result[0])) return FEDGE_ENONFINITE;
	model_backward(n);
	return FEDGE_OK;
}

/* fedge_apply takes the SGD/FedProx step of fedge_train with the gradient
 * the host left in fedge_grads. */
EXPORT("fedge_apply") int fedge_apply(float lr, float mu) {
	if (!g_ready) return FEDGE_ESTATE;
	if (!finitef(lr) || !finitef(mu) || mu < 0.0f) return FEDGE_EINVAL;
	sgd(g_params, g_grads, g_global, g_nparams, lr, mu);
	return FEDGE_OK;
}

EXPORT("fedge_evaluate") int fedge_evaluate(int n) {
	int rc = check_batch(n);
	if (rc) return rc;
	model_forward(n);
	softmax_xent(n, 0, 0.0f);
	return FEDGE_OK;
}

EXPORT("fedge_predict") int fedge_predict(int n) {
	if (!g_ready) return FEDGE_ESTATE;
	if (n < 1 || n > g_max_batch) return FEDGE_EINVAL;
	model_forward(n);
	int *labels = g_labels;
	g_labels = 0;
	softmax_xent(n, 0, 0.0f);
	g_labels = labels;
	return FEDGE_OK;
}

#endif
