// A bfloat16 matrix–vector product of our own (AVX-512 BF16 dot products), for one-row inference
// products (a decoder's decode step): memory-bound, so the bf16 weights halve the bytes read. It
// needs no oneDNN. Kept apart from dnnl_shim.h on purpose.
#ifndef MENAGERIE_BF16_GEMV_H
#define MENAGERIE_BF16_GEMV_H

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when this CPU (and this build's compiler) can run `mng_bf16_gemv`: x86-64 with AVX-512 F/BW
/// and AVX512_BF16, enabled by the operating system.
int mng_bf16_gemv_available(void);

/// y[r] = Σᵢ W[r, i]·x[i] (+ y[r] when `accumulate`) for rows r in [row0, row1) of W [rows × k],
/// bfloat16, row-major with leading dimension k; x [k] in bfloat16; fp32 accumulation (the pairwise
/// products of VDPBF16PS, 16 lanes per row, summed at the end). Call only when available.
void mng_bf16_gemv(long row0, long row1, long k, const unsigned short *w, const unsigned short *x, int accumulate, float *y);

#ifdef __cplusplus
}
#endif

#endif
