// oneDNN direct convolutions (NCHW fp32) for Menagerie's conv2d, loaded with dlopen like the matrix
// products of dnnl_shim.h. See dnnl_conv.c.
#ifndef MENAGERIE_DNNL_CONV_H
#define MENAGERIE_DNNL_CONV_H

#ifdef __cplusplus
extern "C" {
#endif

/// What a call computes: y = conv(x, w) (+ bias); dx = the adjoint of conv in x for dy and w; dw
/// (and the bias gradient) = the adjoint in w for x and dy.
enum { MNG_CONV_FORWARD = 0, MNG_CONV_BACKWARD_DATA = 1, MNG_CONV_BACKWARD_WEIGHTS = 2 };

/// A convolution's geometry: source [n, c, h, w], weights [o, c/groups, kh, kw], destination
/// [n, o, oh, ow]; stride, padding (top/left; the bottom/right padding follows from oh, ow) and
/// dilation (1 = none) as torch states them. `bias` is set by the call.
typedef struct {
    long n, c, h, w, o, kh, kw, oh, ow, sy, sx, py, px, dy, dx, groups, bias;
} MngConvShape;

/// Runs one convolution on `threads` OpenMP threads, NCHW / OIHW fp32 contiguous tensors:
///   FORWARD:          a = x, b = w, out = y; bias (may be NULL) is read.
///   BACKWARD_DATA:    a = dy, b = w, out = dx.
///   BACKWARD_WEIGHTS: a = x, b = dy, out = dw; bias (may be NULL) receives the bias gradient.
/// `plain`: the primitive works on NCHW itself instead of its own blocked layouts with reorders.
/// Primitives are cached by shape. Returns 0 on success, otherwise a oneDNN status or -1 when oneDNN
/// cannot load (the caller falls back to its own convolution).
int mng_dnnl_conv(int kind, const MngConvShape *shape, int plain, const float *a, const float *b, float *out, float *bias,
                  int threads);

/// Convolution primitives created so far (cache misses) and convolutions run.
void mng_dnnl_conv_counters(long *created, long *executed);

#ifdef __cplusplus
}
#endif

#endif
