// oneDNN direct convolutions, loaded with dlopen (see include/dnnl_conv.h).
//
// The library, its engine, the streams and the cache mechanism are dnnl_shim.c's (dnnl_internal.h);
// this file has its own cache of convolution primitives.
//
// A convolution primitive is created with its tensors in `format_tag_any`, so oneDNN picks its
// blocked layouts (nChw8c / nChw16c and blocked weights, its direct jit kernels); our tensors are
// NCHW and OIHW, so each argument whose chosen layout differs is reordered in (inputs) or out
// (outputs) around the primitive, per call. With `plain` set the primitive is created on NCHW /
// OIHW itself (no reorders; oneDNN then mostly takes its gemm-based kernels) — the benchmarks
// compare both. The primitive, its reorders and the layouts are cached by everything that shapes
// them, like the matmul cache: an entry is reference-counted so a replaced one still running in
// another thread lives until that call ends. Scratchpads are the caller's (allocated per call), so
// two threads can run one primitive at once.
#define _GNU_SOURCE
#include "dnnl_conv.h"
#include "dnnl_internal.h"
#include "dnnl_shim.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long conv_created_count, conv_executed_count;

void mng_dnnl_conv_counters(long *created, long *executed) {
    *created = __atomic_load_n(&conv_created_count, __ATOMIC_RELAXED);
    *executed = __atomic_load_n(&conv_executed_count, __ATOMIC_RELAXED);
}

#if !MNG_HAVE_DNNL_HEADERS

int mng_dnnl_conv(int kind, const MngConvShape *shape, int plain, const float *a, const float *b, float *out, float *bias,
                  int threads) {
    return -1;
}

#else

// ---- The primitive cache ------------------------------------------------------------------------

typedef struct {
    int kind, plain;
    MngConvShape shape;
} ConvKey;

// One tensor argument: its layout in our memory (NCHW / OIHW / goihw), the primitive's, and the
// reorder between them (NULL when they are the same).
typedef struct {
    int arg, output;
    dnnl_memory_desc_t user, inner;
    dnnl_primitive_t reorder;
    size_t inner_size;
} ConvArg;

typedef struct {
    MngCached header;
    ConvKey key;
    dnnl_primitive_t primitive;
    ConvArg args[3];
    dnnl_memory_desc_t bias, scratch;
    size_t scratch_size;
} ConvEntry;

MNG_CACHE(conv_cache, 64);

static dnnl_status_t tagged(dnnl_memory_desc_t *md, int ndims, const dnnl_dim_t *dims, dnnl_format_tag_t tag) {
    dnnl_dims_t d;
    for (int i = 0; i < ndims; i++) d[i] = dims[i];
    return mng_p_dnnl_memory_desc_init_by_tag(md, ndims, d, dnnl_f32, tag);
}

// Our layouts of source [n, c, h, w], weights [o, c/g, kh, kw] (5-D [g, o/g, c/g, kh, kw] with
// groups), destination [n, o, oh, ow] and bias [o], with `tag` or the plain tag.
static dnnl_status_t descriptors(const MngConvShape *s, int any, dnnl_memory_desc_t *src, dnnl_memory_desc_t *wei,
                                 dnnl_memory_desc_t *dst, dnnl_memory_desc_t *bias) {
    dnnl_status_t st;
    dnnl_dim_t sd[4] = {s->n, s->c, s->h, s->w}, dd[4] = {s->n, s->o, s->oh, s->ow}, bd[1] = {s->o};
    dnnl_dim_t wd[5] = {s->groups, s->o / s->groups, s->c / s->groups, s->kh, s->kw};
    int grouped = s->groups > 1;
    if ((st = tagged(src, 4, sd, any ? dnnl_format_tag_any : dnnl_nchw)) != dnnl_success) return st;
    if ((st = tagged(dst, 4, dd, any ? dnnl_format_tag_any : dnnl_nchw)) != dnnl_success) return st;
    if ((st = tagged(wei, grouped ? 5 : 4, grouped ? wd : wd + 1, any ? dnnl_format_tag_any : (grouped ? dnnl_goihw : dnnl_oihw))) !=
        dnnl_success)
        return st;
    return tagged(bias, 1, bd, dnnl_x);
}

// Fills `arg` for the primitive's layout `inner` of a tensor stored as `user`.
static dnnl_status_t prepare_arg(ConvArg *arg, int which, int output, const dnnl_memory_desc_t *user, const dnnl_memory_desc_t *inner) {
    arg->arg = which;
    arg->output = output;
    arg->user = *user;
    arg->inner = *inner;
    arg->reorder = NULL;
    arg->inner_size = mng_p_dnnl_memory_desc_get_size(inner);
    if (mng_p_dnnl_memory_desc_equal(user, inner)) return dnnl_success;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = output ? mng_p_dnnl_reorder_primitive_desc_create(&pd, inner, mng_engine, user, mng_engine, NULL)
                             : mng_p_dnnl_reorder_primitive_desc_create(&pd, user, mng_engine, inner, mng_engine, NULL);
    if (s == dnnl_success) s = mng_p_dnnl_primitive_create(&arg->reorder, pd);
    if (pd != NULL) mng_p_dnnl_primitive_desc_destroy(pd);
    return s;
}

static void destroy_entry(MngCached *header) {
    ConvEntry *e = (ConvEntry *)header;
    if (e->primitive != NULL) mng_p_dnnl_primitive_destroy(e->primitive);
    for (int i = 0; i < 3; i++)
        if (e->args[i].reorder != NULL) mng_p_dnnl_primitive_destroy(e->args[i].reorder);
    free(e);
}

static dnnl_status_t conv_fill(const ConvKey *key, ConvEntry *e) {
    const MngConvShape *s = &key->shape;
    dnnl_memory_desc_t src, wei, dst, bias, usrc, uwei, udst, ubias;
    dnnl_status_t st;
    if ((st = descriptors(s, !key->plain, &src, &wei, &dst, &bias)) != dnnl_success) return st;
    if ((st = descriptors(s, 0, &usrc, &uwei, &udst, &ubias)) != dnnl_success) return st;
    dnnl_dims_t strides = {s->sy, s->sx}, dilates = {s->dy - 1, s->dx - 1}, pl = {s->py, s->px};
    // The high padding that makes the output oh × ow (torch rounds the output size down).
    dnnl_dims_t pr = {(s->oh - 1) * s->sy + (s->kh - 1) * s->dy + 1 - s->h - s->py, (s->ow - 1) * s->sx + (s->kw - 1) * s->dx + 1 - s->w - s->px};
    int with_bias = s->bias != 0;
    dnnl_convolution_desc_t fwd_desc, desc;
    st = mng_p_dnnl_dilated_convolution_forward_desc_init(&fwd_desc, dnnl_forward_training, dnnl_convolution_direct, &src, &wei,
                                                       with_bias ? &bias : NULL, &dst, strides, dilates, pl, pr);
    if (st != dnnl_success) return st;
    if (key->kind == MNG_CONV_BACKWARD_DATA)
        st = mng_p_dnnl_dilated_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct, &src, &wei, &dst, strides, dilates, pl, pr);
    else if (key->kind == MNG_CONV_BACKWARD_WEIGHTS)
        st = mng_p_dnnl_dilated_convolution_backward_weights_desc_init(&desc, dnnl_convolution_direct, &src, &wei, with_bias ? &bias : NULL,
                                                                    &dst, strides, dilates, pl, pr);
    if (st != dnnl_success) return st;
    dnnl_primitive_attr_t attr;
    if ((st = mng_p_dnnl_primitive_attr_create(&attr)) != dnnl_success) return st;
    st = mng_p_dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    if (st == dnnl_success) st = mng_p_dnnl_primitive_desc_create(&hint, &fwd_desc, attr, mng_engine, NULL);
    if (st == dnnl_success) {
        if (key->kind == MNG_CONV_FORWARD) {
            pd = hint;
            hint = NULL;
        } else {
            st = mng_p_dnnl_primitive_desc_create(&pd, &desc, attr, mng_engine, hint);
        }
    }
    if (st == dnnl_success) {
        const dnnl_memory_desc_t *q_src, *q_wei, *q_dst;
        switch (key->kind) {
        case MNG_CONV_FORWARD:
            q_src = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
            q_wei = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
            q_dst = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
            st = prepare_arg(&e->args[0], DNNL_ARG_SRC, 0, &usrc, q_src);
            if (st == dnnl_success) st = prepare_arg(&e->args[1], DNNL_ARG_WEIGHTS, 0, &uwei, q_wei);
            if (st == dnnl_success) st = prepare_arg(&e->args[2], DNNL_ARG_DST, 1, &udst, q_dst);
            break;
        case MNG_CONV_BACKWARD_DATA:
            q_dst = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0);
            q_wei = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
            q_src = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_diff_src_md, 0);
            st = prepare_arg(&e->args[0], DNNL_ARG_DIFF_DST, 0, &udst, q_dst);
            if (st == dnnl_success) st = prepare_arg(&e->args[1], DNNL_ARG_WEIGHTS, 0, &uwei, q_wei);
            if (st == dnnl_success) st = prepare_arg(&e->args[2], DNNL_ARG_DIFF_SRC, 1, &usrc, q_src);
            break;
        default:
            q_src = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
            q_dst = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0);
            q_wei = mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0);
            st = prepare_arg(&e->args[0], DNNL_ARG_SRC, 0, &usrc, q_src);
            if (st == dnnl_success) st = prepare_arg(&e->args[1], DNNL_ARG_DIFF_DST, 0, &udst, q_dst);
            if (st == dnnl_success) st = prepare_arg(&e->args[2], DNNL_ARG_DIFF_WEIGHTS, 1, &uwei, q_wei);
        }
    }
    if (st == dnnl_success) {
        e->bias = ubias;
        e->scratch = *mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        e->scratch_size = mng_p_dnnl_memory_desc_get_size(&e->scratch);
        st = mng_p_dnnl_primitive_create(&e->primitive, pd);
    }
    if (hint != NULL) mng_p_dnnl_primitive_desc_destroy(hint);
    if (pd != NULL) mng_p_dnnl_primitive_desc_destroy(pd);
    mng_p_dnnl_primitive_attr_destroy(attr);
    if (st == dnnl_success) __atomic_add_fetch(&conv_created_count, 1, __ATOMIC_RELAXED);
    return st;
}

static dnnl_status_t conv_create(const void *key, MngCached **out) {
    ConvEntry *e = calloc(1, sizeof(ConvEntry));
    if (e == NULL) return dnnl_out_of_memory;
    e->key = *(const ConvKey *)key;
    e->header = (MngCached){.destroy = destroy_entry, .key = &e->key, .key_size = sizeof(ConvKey)};
    dnnl_status_t s = conv_fill(&e->key, e);
    if (s != dnnl_success) {
        destroy_entry(&e->header);
        return s;
    }
    *out = &e->header;
    return dnnl_success;
}

// ---- Execution -----------------------------------------------------------------------------------

int mng_dnnl_conv(int kind, const MngConvShape *shape, int plain, const float *a, const float *b, float *out, float *bias,
                  int threads) {
    if (!mng_dnnl_load(NULL, 0)) return -1;
    dnnl_status_t s;
    dnnl_stream_t conv_stream = mng_thread_stream(&s);
    if (conv_stream == NULL) return (int)s;
    ConvKey key;
    memset(&key, 0, sizeof key); // padding bytes too: keys are compared with memcmp
    key.kind = kind;
    key.plain = plain != 0;
    key.shape = *shape;
    key.shape.bias = bias != NULL;
    MngCached *cached;
    if ((s = mng_cache_lookup(&conv_cache, &key, sizeof key, conv_create, &cached)) != dnnl_success) return (int)s;
    ConvEntry *e = (ConvEntry *)cached;
    mng_set_threads(threads);

    void *user_data[3] = {(void *)a, (void *)b, out};
    dnnl_memory_t user[3] = {NULL, NULL, NULL}, inner[3] = {NULL, NULL, NULL}, mbias = NULL, mscratch = NULL;
    void *buffers[3] = {NULL, NULL, NULL}, *scratch = NULL;
    s = dnnl_success;
    for (int i = 0; i < 3 && s == dnnl_success; i++) {
        s = mng_p_dnnl_memory_create(&user[i], &e->args[i].user, mng_engine, user_data[i]);
        if (s != dnnl_success || e->args[i].reorder == NULL) continue;
        if ((buffers[i] = mng_aligned(e->args[i].inner_size)) == NULL) s = dnnl_out_of_memory;
        if (s == dnnl_success) s = mng_p_dnnl_memory_create(&inner[i], &e->args[i].inner, mng_engine, buffers[i]);
    }
    if (s == dnnl_success && bias != NULL) s = mng_p_dnnl_memory_create(&mbias, &e->bias, mng_engine, bias);
    if (s == dnnl_success && (scratch = mng_aligned(e->scratch_size)) == NULL) s = dnnl_out_of_memory;
    if (s == dnnl_success) s = mng_p_dnnl_memory_create(&mscratch, &e->scratch, mng_engine, scratch);
    // Inputs into the primitive's layouts.
    for (int i = 0; i < 3 && s == dnnl_success; i++) {
        if (e->args[i].reorder == NULL || e->args[i].output) continue;
        dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, user[i]}, {DNNL_ARG_TO, inner[i]}};
        s = mng_p_dnnl_primitive_execute(e->args[i].reorder, conv_stream, 2, r);
    }
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[5];
        int count = 0;
        for (int i = 0; i < 3; i++) args[count++] = (dnnl_exec_arg_t){e->args[i].arg, inner[i] != NULL ? inner[i] : user[i]};
        if (mbias != NULL) args[count++] = (dnnl_exec_arg_t){kind == MNG_CONV_FORWARD ? DNNL_ARG_BIAS : DNNL_ARG_DIFF_BIAS, mbias};
        args[count++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mscratch};
        s = mng_p_dnnl_primitive_execute(e->primitive, conv_stream, count, args);
    }
    // The output back into ours.
    for (int i = 0; i < 3 && s == dnnl_success; i++) {
        if (e->args[i].reorder == NULL || !e->args[i].output) continue;
        dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, inner[i]}, {DNNL_ARG_TO, user[i]}};
        s = mng_p_dnnl_primitive_execute(e->args[i].reorder, conv_stream, 2, r);
    }
    if (s == dnnl_success) s = mng_p_dnnl_stream_wait(conv_stream);
    if (s == dnnl_success) __atomic_add_fetch(&conv_executed_count, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 3; i++) {
        if (user[i]) mng_p_dnnl_memory_destroy(user[i]);
        if (inner[i]) mng_p_dnnl_memory_destroy(inner[i]);
        free(buffers[i]);
    }
    if (mbias) mng_p_dnnl_memory_destroy(mbias);
    if (mscratch) mng_p_dnnl_memory_destroy(mscratch);
    free(scratch);
    mng_cache_release(&conv_cache, cached);
    return (int)s;
}

#endif
