// What the oneDNN files of this target share (not a public header): the library's functions as
// pointers, its engine, a stream per thread, the OpenMP thread count, and a reference-counted
// primitive cache. dnnl_shim.c loads the library and owns all of it; dnnl_conv.c uses it.
#ifndef MENAGERIE_DNNL_INTERNAL_H
#define MENAGERIE_DNNL_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#if __has_include(<oneapi/dnnl/dnnl.h>)
#include <oneapi/dnnl/dnnl.h>
#define MNG_HAVE_DNNL_HEADERS 1
#else
#define MNG_HAVE_DNNL_HEADERS 0
#endif

/// x rounded to bfloat16: to nearest, ties to even; NaN stays NaN. Branch-free, so loops over it
/// vectorise.
static inline uint16_t mng_to_bf16(float x) {
    uint32_t bits;
    __builtin_memcpy(&bits, &x, 4);
    uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    uint32_t quiet = (bits >> 16) | 0x40u;
    return (uint16_t)((bits & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

#if MNG_HAVE_DNNL_HEADERS

// Every oneDNN function either file calls, as pointers of their declared types (`mng_p_NAME`).
#define MNG_DNNL_FUNCTIONS(X)                                                                                          \
    X(dnnl_engine_create)                                                                                              \
    X(dnnl_stream_create)                                                                                              \
    X(dnnl_stream_wait)                                                                                                \
    X(dnnl_memory_desc_init_by_strides)                                                                                \
    X(dnnl_memory_desc_init_by_tag)                                                                                    \
    X(dnnl_memory_desc_equal)                                                                                          \
    X(dnnl_memory_desc_get_size)                                                                                       \
    X(dnnl_matmul_desc_init)                                                                                           \
    X(dnnl_dilated_convolution_forward_desc_init)                                                                      \
    X(dnnl_dilated_convolution_backward_data_desc_init)                                                                \
    X(dnnl_dilated_convolution_backward_weights_desc_init)                                                             \
    X(dnnl_reorder_primitive_desc_create)                                                                              \
    X(dnnl_primitive_attr_create)                                                                                      \
    X(dnnl_primitive_attr_destroy)                                                                                     \
    X(dnnl_primitive_attr_set_output_scales)                                                                           \
    X(dnnl_primitive_attr_set_post_ops)                                                                                \
    X(dnnl_primitive_attr_set_scratchpad_mode)                                                                         \
    X(dnnl_post_ops_create)                                                                                            \
    X(dnnl_post_ops_destroy)                                                                                           \
    X(dnnl_post_ops_append_sum)                                                                                        \
    X(dnnl_post_ops_append_eltwise)                                                                                    \
    X(dnnl_primitive_desc_create)                                                                                      \
    X(dnnl_primitive_desc_destroy)                                                                                     \
    X(dnnl_primitive_desc_query_md)                                                                                    \
    X(dnnl_primitive_create)                                                                                           \
    X(dnnl_primitive_destroy)                                                                                          \
    X(dnnl_primitive_execute)                                                                                          \
    X(dnnl_memory_create)                                                                                              \
    X(dnnl_memory_destroy)                                                                                             \
    X(dnnl_version)                                                                                                    \
    X(dnnl_get_effective_cpu_isa)

#define MNG_DECLARE(name) extern __attribute__((visibility("hidden"))) __typeof__(&name) mng_p_##name;
MNG_DNNL_FUNCTIONS(MNG_DECLARE)
#undef MNG_DECLARE

/// The CPU engine (valid once `mng_dnnl_load` returned 1).
extern __attribute__((visibility("hidden"))) dnnl_engine_t mng_engine;

/// This thread's stream, created on first use (NULL and the status in `status` on failure).
__attribute__((visibility("hidden"))) dnnl_stream_t mng_thread_stream(dnnl_status_t *status);

/// Sets the OpenMP thread count oneDNN's next primitive runs on (at least 1).
__attribute__((visibility("hidden"))) void mng_set_threads(int threads);

/// 64-byte aligned memory of at least `size` bytes (64 for 0), or NULL.
__attribute__((visibility("hidden"))) void *mng_aligned(size_t size);

// ---- A primitive cache ----------------------------------------------------------------------------
//
// Entries are kept by a key of plain bytes (built with memset first: keys compare with memcmp, so
// padding bytes count). Each entry starts with an `MngCached` header. An entry is reference-counted:
// the cache holds one reference and each call running it another, so an entry replaced while another
// thread runs it lives until that call releases it. Misses replace the oldest entry, round-robin.

typedef struct MngCached {
    int references;
    void (*destroy)(struct MngCached *entry); // frees the entry and its primitives
    const void *key;                           // the entry's own copy
    size_t key_size;
} MngCached;

typedef struct {
    MngCached **slots;
    int size;
    unsigned long next;
    pthread_mutex_t lock;
} MngCache;

#define MNG_CACHE(name, count)                                                                                         \
    static MngCached *name##_slots[count];                                                                             \
    static MngCache name = {name##_slots, count, 0, PTHREAD_MUTEX_INITIALIZER}

/// The entry for `key` with a reference for the caller; on a miss `create(key, &entry)` makes one
/// (with its header filled, references 0). Release it with `mng_cache_release`.
__attribute__((visibility("hidden"))) dnnl_status_t mng_cache_lookup(MngCache *cache, const void *key, size_t key_size,
                                                                     dnnl_status_t (*create)(const void *key, MngCached **entry),
                                                                     MngCached **out);
__attribute__((visibility("hidden"))) void mng_cache_release(MngCache *cache, MngCached *entry);

#endif

#endif
