// oneDNN (Intel's Deep Neural Network Library) matrix products for Menagerie's GEMM backend.
//
// oneDNN is loaded with dlopen at run time, never linked: a build without its headers compiles this
// file to "unavailable", and a binary built with them still starts on a machine without the library
// (it then says why in `menagerie doctor` and keeps OpenBLAS).
#ifndef MENAGERIE_DNNL_SHIM_H
#define MENAGERIE_DNNL_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Loads libdnnl and creates its CPU engine, once. Returns 1 when oneDNN can be used; otherwise 0 and
/// the reason in `message` (a NUL-terminated string of at most `size` bytes).
int mng_dnnl_load(char *message, size_t size);

/// "MAJOR.MINOR.PATCH (ISA)" of the loaded library, or "" before a successful load.
const char *mng_dnnl_version(void);

/// 1 when the CPU has native BF16 dot products (avx512_bf16 or AMX), so bf16 products pay.
int mng_dnnl_has_bf16(void);

/// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C, row-major with leading dimensions, op =
/// transpose when the flag is set, on `threads` threads. `bf16`: A and B are rounded to bfloat16
/// (round to nearest even) and multiplied with fp32 accumulation; otherwise all fp32. Primitives are
/// cached by shape. Returns 0 on success, otherwise a oneDNN status (the caller falls back).
int mng_dnnl_sgemm(int bf16, int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                   const float *b, long ldb, float beta, float *c, long ldc, int threads);

/// What `mng_dnnl_linear` applies to A·Wᵀ + bias: nothing, GELU (the erf form), or x·σ(α·x) (swish;
/// CLIP's quick GELU is α = 1.702).
enum { MNG_ACTIVATION_NONE = 0, MNG_ACTIVATION_GELU_ERF = 1, MNG_ACTIVATION_SWISH = 2 };

/// One linear layer's product: C [m×n] = act(A [m×k] · Wᵀ + bias) for a weight W [n×k], with fp32
/// accumulation. In bf16 (the default) W is already bfloat16 (rounded once by `mng_round_bf16`); with
/// `fp32` everything is fp32 (W, A and C; `a_bf16` and `c_bf16` must be 0).
typedef struct {
    long m, n, k;
    long lda, ldc;  // leading dimensions of A and C, in elements
    int fp32;       // W, A and C are fp32
    int a_bf16;     // A is bfloat16; otherwise fp32, rounded to bfloat16 per call (unless `fp32`)
    int c_bf16;     // C is written in bfloat16; otherwise fp32
    int accumulate; // C += act(A·Wᵀ + bias) (fp32 C only)
    int activation; // MNG_ACTIVATION_*
    float alpha;    // the swish's α
} MngLinear;

/// Runs `spec` on `threads` threads; `w` is bfloat16 (or fp32 with `spec->fp32`); `bias` [n] fp32 may be
/// NULL. The bias, the activation and the accumulation are oneDNN post-operations of the one product
/// (no pass of ours over C). Primitives are cached by shape. Returns 0 on success, otherwise a oneDNN
/// status or -1 (the caller falls back).
int mng_dnnl_linear(const MngLinear *spec, const void *a, const void *w, const float *bias, void *c, int threads);

/// A (batched) product over strided operands: C = alpha · A · B with A [..., m×k], B [..., k×n], C
/// [..., m×n]; `ndims` 2 to 4 (the leading ones batch dimensions, broadcast where a size is 1), every
/// stride in elements (any layout: a transposed or interleaved operand is its strides). A and B both
/// bfloat16 (fp32 accumulation) or both fp32; C fp32 or bfloat16. One call for, e.g., every
/// (image, head) pair of an attention. Returns 0 on success.
typedef struct {
    int ndims;
    long a_dims[4], a_strides[4], b_dims[4], b_strides[4], c_dims[4], c_strides[4];
    int a_bf16, b_bf16, c_bf16;
    float alpha;
} MngMatmul;
int mng_dnnl_matmul(const MngMatmul *spec, const void *a, const void *b, void *c, int threads);

/// out[i] = x[i] rounded to bfloat16 (to nearest, ties to even; NaN stays NaN). Needs no oneDNN.
void mng_round_bf16(const float *x, unsigned short *out, long count);

/// Primitives created so far (cache misses) and products run, for the benchmarks and tests.
void mng_dnnl_counters(long *created, long *executed);

/// Products (matmul primitives) the calling thread has run.
long mng_dnnl_thread_executed(void);

#ifdef __cplusplus
}
#endif

#endif
