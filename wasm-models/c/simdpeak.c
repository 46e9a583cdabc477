/* simdpeak: the SIMD128 ceiling of the sandbox, for the peer benchmark
 * (scripts/benchpeers). simd_peak(blocks, m, c) runs blocks times a
 * loop-free block of 64 rounds of a = a * m + c on twelve independent f32x4
 * accumulators (6,144 floating-point operations), the shape the model
 * kernels use: the host's deadline check sits only at the loop calling the
 * blocks. Not a model: it exports no fedge ABI. */
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(name)))

static v128_t acc[12];

#define R(a) a = wasm_f32x4_add(wasm_f32x4_mul(a, m), c);
#define ROUND                                                                                                   \
	R(a0) R(a1) R(a2) R(a3) R(a4) R(a5) R(a6) R(a7) R(a8) R(a9) R(a10) R(a11)                            \
	__asm__("" : "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(a4), "+r"(a5), "+r"(a6), "+r"(a7), "+r"(a8),  \
	        "+r"(a9), "+r"(a10), "+r"(a11));
#define ROUND4 ROUND ROUND ROUND ROUND
#define ROUND16 ROUND4 ROUND4 ROUND4 ROUND4

static __attribute__((noinline)) void block(v128_t m, v128_t c) {
	v128_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3], a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7],
	       a8 = acc[8], a9 = acc[9], a10 = acc[10], a11 = acc[11];
	ROUND16 ROUND16 ROUND16 ROUND16
	acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3, acc[4] = a4, acc[5] = a5;
	acc[6] = a6, acc[7] = a7, acc[8] = a8, acc[9] = a9, acc[10] = a10, acc[11] = a11;
}

/* simd_peak returns a lane of the sum, so that nothing is optimised away. */
EXPORT("simd_peak") float simd_peak(int blocks, float m, float c) {
	v128_t vm = wasm_f32x4_splat(m), vc = wasm_f32x4_splat(c);
	for (int i = 0; i < 12; i++) acc[i] = wasm_f32x4_splat(1.0f);
	for (int i = 0; i < blocks; i++) block(vm, vc);
	v128_t s = acc[0];
	for (int i = 1; i < 12; i++) s = wasm_f32x4_add(s, acc[i]);
	return wasm_f32x4_extract_lane(s, 0);
}
