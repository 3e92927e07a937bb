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

/// C[m×n] = A[m×k] · Wᵀ + beta · C for a weight W [n×k] already in bfloat16 (a linear layer's,
/// rounded once by `mng_round_bf16`); A (fp32) is rounded per call. Returns 0 on success.
int mng_dnnl_linear_bf16(long m, long n, long k, const float *a, long lda, const unsigned short *w, float beta, float *c,
                         long ldc, int threads);

/// out[i] = x[i] rounded to bfloat16 (to nearest, ties to even; NaN stays NaN). Needs no oneDNN.
void mng_round_bf16(const float *x, unsigned short *out, long count);

/// Primitives created so far (cache misses) and products run, for the benchmarks and tests.
void mng_dnnl_counters(long *created, long *executed);

#ifdef __cplusplus
}
#endif

#endif
