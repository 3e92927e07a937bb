// See include/bf16_gemv.h. Compiled for any x86-64 target: the kernel carries its own target
// attribute and runs only after a CPUID check; elsewhere it compiles to "unavailable".
#include "bf16_gemv.h"

#include <stdint.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <cpuid.h>
#include <immintrin.h>

int mng_bf16_gemv_available(void) {
    static int cached = -1;
    int known = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (known >= 0) return known;
    unsigned a, b, c, d;
    int ok = 0;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27))) { // OSXSAVE
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        int zmm = (lo & 0xe6u) == 0xe6u; // XMM, YMM, opmask, ZMM state enabled by the OS
        unsigned b7 = 0, a71 = 0, x;
        if (__get_cpuid_count(7, 0, &x, &b7, &c, &d) && __get_cpuid_count(7, 1, &a71, &x, &c, &d)) {
            int f = (b7 >> 16) & 1, bw = (b7 >> 30) & 1, bf16 = (a71 >> 5) & 1;
            ok = zmm && f && bw && bf16;
        }
    }
    __atomic_store_n(&cached, ok, __ATOMIC_RELAXED);
    return ok;
}

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

TARGET static inline __m512bh load(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }
TARGET static inline __m512bh load_masked(const uint16_t *p, __mmask32 m) { return (__m512bh)_mm512_maskz_loadu_epi16(m, p); }

TARGET void mng_bf16_gemv(long row0, long row1, long k, const unsigned short *w, const unsigned short *x, int accumulate, float *y) {
    const long full = k & ~31L;
    const long rest = k - full;
    const __mmask32 tail = rest ? (__mmask32)((1ull << rest) - 1) : 0;
    long r = row0;
    // Four rows at a time: four independent accumulator chains, x loaded once for them.
    for (; r + 4 <= row1; r += 4) {
        const uint16_t *w0 = w + r * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
        for (long i = 0; i < full; i += 32) {
            __m512bh xv = load(x + i);
            s0 = _mm512_dpbf16_ps(s0, load(w0 + i), xv);
            s1 = _mm512_dpbf16_ps(s1, load(w1 + i), xv);
            s2 = _mm512_dpbf16_ps(s2, load(w2 + i), xv);
            s3 = _mm512_dpbf16_ps(s3, load(w3 + i), xv);
        }
        if (rest) {
            __m512bh xv = load_masked(x + full, tail);
            s0 = _mm512_dpbf16_ps(s0, load_masked(w0 + full, tail), xv);
            s1 = _mm512_dpbf16_ps(s1, load_masked(w1 + full, tail), xv);
            s2 = _mm512_dpbf16_ps(s2, load_masked(w2 + full, tail), xv);
            s3 = _mm512_dpbf16_ps(s3, load_masked(w3 + full, tail), xv);
        }
        float v0 = _mm512_reduce_add_ps(s0), v1 = _mm512_reduce_add_ps(s1), v2 = _mm512_reduce_add_ps(s2), v3 = _mm512_reduce_add_ps(s3);
        if (accumulate) {
            y[r] += v0, y[r + 1] += v1, y[r + 2] += v2, y[r + 3] += v3;
        } else {
            y[r] = v0, y[r + 1] = v1, y[r + 2] = v2, y[r + 3] = v3;
        }
    }
    for (; r < row1; r++) {
        const uint16_t *wr = w + r * k;
        __m512 s = _mm512_setzero_ps();
        for (long i = 0; i < full; i += 32) s = _mm512_dpbf16_ps(s, load(wr + i), load(x + i));
        if (rest) s = _mm512_dpbf16_ps(s, load_masked(wr + full, tail), load_masked(x + full, tail));
        float v = _mm512_reduce_add_ps(s);
        y[r] = accumulate ? y[r] + v : v;
    }
}

#else

int mng_bf16_gemv_available(void) { return 0; }
void mng_bf16_gemv(long row0, long row1, long k, const unsigned short *w, const unsigned short *x, int accumulate, float *y) {
    (void)row0, (void)row1, (void)k, (void)w, (void)x, (void)accumulate, (void)y;
}

#endif
