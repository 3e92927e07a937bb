// oneDNN matrix products, loaded with dlopen (see include/dnnl_shim.h).
//
// Every oneDNN function is called through a pointer looked up in the library, so nothing here is
// linked against it. A product is a oneDNN matmul primitive over strided memory descriptors (a
// transposed operand is the same buffer with swapped strides); alpha is the primitive's output
// scale and beta a "sum" post-operation. Primitive creation costs about half a millisecond, so
// primitives are kept in a small cache keyed by everything that shapes them; executing one is
// thread-safe, and each calling thread has its own stream.
#define _GNU_SOURCE
#include "dnnl_shim.h"
#include "dnnl_internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long created_count, executed_count;
static __thread long thread_executed_count;

long mng_dnnl_thread_executed(void) { return thread_executed_count; }

void mng_dnnl_counters(long *created, long *executed) {
    *created = __atomic_load_n(&created_count, __ATOMIC_RELAXED);
    *executed = __atomic_load_n(&executed_count, __ATOMIC_RELAXED);
}

void mng_round_bf16(const float *x, unsigned short *out, long count) {
    for (long i = 0; i < count; i++) out[i] = mng_to_bf16(x[i]);
}

#if !MNG_HAVE_DNNL_HEADERS

int mng_dnnl_load(char *message, size_t size) {
    snprintf(message, size, "built without oneDNN's headers (install libdnnl-dev: scripts/bootstrap) — OpenBLAS only");
    return 0;
}
const char *mng_dnnl_version(void) { return ""; }
int mng_dnnl_has_bf16(void) { return 0; }
int mng_dnnl_sgemm(int bf16, int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                   const float *b, long ldb, float beta, float *c, long ldc, int threads) {
    return -1;
}
int mng_dnnl_linear(const MngLinear *spec, const void *a, const void *w, const float *bias, void *c, int threads) {
    return -1;
}
int mng_dnnl_matmul(const MngMatmul *spec, const void *a, const void *b, void *c, int threads) { return -1; }

#else

#define MNG_DEFINE(name) __typeof__(&name) mng_p_##name;
MNG_DNNL_FUNCTIONS(MNG_DEFINE)
#undef MNG_DEFINE

dnnl_engine_t mng_engine;
static void (*p_omp_set_num_threads)(int);

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int loaded;
static char load_message[512];
static char version_text[96];

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_sse41: return "sse41";
    default: return "other";
    }
}

static void load(void) {
    // libgomp reads its settings when it is loaded, which is now (oneDNN's OpenMP runtime): idle
    // OpenMP threads spin 300,000 iterations by default before they sleep, and on this machine's two
    // cores that spinning competes with OpenBLAS's threads and the elementwise work between two
    // products. A short spin unless the user chose one.
    if (getenv("OMP_WAIT_POLICY") == NULL && getenv("GOMP_SPINCOUNT") == NULL) setenv("GOMP_SPINCOUNT", "10000", 0);
    void *library = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *why = dlerror();
        snprintf(load_message, sizeof load_message, "libdnnl.so.2 not found (%s): install libdnnl2 (scripts/bootstrap)",
                 why ? why : "dlopen failed");
        return;
    }
#define MNG_RESOLVE(name)                                                                                              \
    mng_p_##name = (__typeof__(&name))dlsym(library, #name);                                                           \
    if (mng_p_##name == NULL) {                                                                                        \
        snprintf(load_message, sizeof load_message, "libdnnl.so.2 lacks %s (oneDNN 2.x needed)", #name);             \
        return;                                                                                                        \
    }
    MNG_DNNL_FUNCTIONS(MNG_RESOLVE)
#undef MNG_RESOLVE
    p_omp_set_num_threads = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (p_omp_set_num_threads == NULL) {
        void *gomp = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (gomp != NULL) p_omp_set_num_threads = (void (*)(int))dlsym(gomp, "omp_set_num_threads");
    }
    dnnl_status_t status = mng_p_dnnl_engine_create(&mng_engine, dnnl_cpu, 0);
    if (status != dnnl_success) {
        snprintf(load_message, sizeof load_message, "oneDNN could not create its CPU engine (status %d)", (int)status);
        return;
    }
    const dnnl_version_t *v = mng_p_dnnl_version();
    snprintf(version_text, sizeof version_text, "%d.%d.%d (%s)", v->major, v->minor, v->patch,
             isa_name(mng_p_dnnl_get_effective_cpu_isa()));
    loaded = 1;
}

int mng_dnnl_load(char *message, size_t size) {
    pthread_once(&load_once, load);
    if (!loaded && message != NULL && size > 0) snprintf(message, size, "%s", load_message);
    return loaded;
}

const char *mng_dnnl_version(void) { return loaded ? version_text : ""; }

int mng_dnnl_has_bf16(void) {
    if (!mng_dnnl_load(NULL, 0)) return 0;
    dnnl_cpu_isa_t isa = mng_p_dnnl_get_effective_cpu_isa();
    return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}

static __thread dnnl_stream_t thread_stream;

dnnl_stream_t mng_thread_stream(dnnl_status_t *status) {
    *status = dnnl_success;
    if (thread_stream == NULL) *status = mng_p_dnnl_stream_create(&thread_stream, mng_engine, dnnl_stream_default_flags);
    return *status == dnnl_success ? thread_stream : NULL;
}

void mng_set_threads(int threads) {
    if (p_omp_set_num_threads != NULL) p_omp_set_num_threads(threads > 0 ? threads : 1);
}

void *mng_aligned(size_t size) {
    void *p = NULL;
    return posix_memalign(&p, 64, size > 0 ? size : 64) == 0 ? p : NULL;
}

// ---- The primitive cache ------------------------------------------------------------------------

static void release_locked(MngCached *entry) {
    if (--entry->references == 0) entry->destroy(entry);
}

dnnl_status_t mng_cache_lookup(MngCache *cache, const void *key, size_t key_size,
                               dnnl_status_t (*create)(const void *key, MngCached **entry), MngCached **out) {
    pthread_mutex_lock(&cache->lock);
    for (int i = 0; i < cache->size; i++) {
        MngCached *e = cache->slots[i];
        if (e != NULL && e->key_size == key_size && memcmp(e->key, key, key_size) == 0) {
            e->references++;
            *out = e;
            pthread_mutex_unlock(&cache->lock);
            return dnnl_success;
        }
    }
    MngCached *fresh = NULL;
    dnnl_status_t s = create(key, &fresh);
    if (s != dnnl_success) {
        pthread_mutex_unlock(&cache->lock);
        return s;
    }
    MngCached **slot = &cache->slots[cache->next++ % (unsigned long)cache->size];
    if (*slot != NULL) release_locked(*slot);
    fresh->references = 2; // the cache's and the caller's
    *slot = fresh;
    *out = fresh;
    pthread_mutex_unlock(&cache->lock);
    return dnnl_success;
}

void mng_cache_release(MngCache *cache, MngCached *entry) {
    pthread_mutex_lock(&cache->lock);
    release_locked(entry);
    pthread_mutex_unlock(&cache->lock);
}

// ---- Matmul primitives ----------------------------------------------------------------------------

// Everything that shapes a matmul primitive: each operand's dimensions (batch dimensions, then rows ×
// columns) and strides in elements, its type, and the attributes.
typedef struct {
    int ndims;
    int a_bf16, b_bf16, c_bf16, bias, activation;
    long a_dims[4], a_strides[4], b_dims[4], b_strides[4], c_dims[4], c_strides[4];
    float alpha, beta, act_alpha;
} Key;

typedef struct {
    MngCached header;
    Key key;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t a, b, c, bias;
    // The primitive's scratchpad, allocated per product: with oneDNN's default (one library-owned
    // scratchpad per primitive) two threads running the same primitive overwrite each other's.
    dnnl_memory_desc_t scratch;
    size_t scratch_size;
} Entry;

MNG_CACHE(matmul_cache, 128);

// A key with every byte zero (padding too: keys compare with memcmp) and the given types.
static Key blank_key(int ndims, int a_bf16, int b_bf16, int c_bf16) {
    Key key;
    memset(&key, 0, sizeof key);
    key.ndims = ndims;
    key.a_bf16 = a_bf16 != 0;
    key.b_bf16 = b_bf16 != 0;
    key.c_bf16 = c_bf16 != 0;
    key.alpha = 1;
    return key;
}

// op(X)[rows×cols] of a 2-D operand stored row-major with leading dimension ld (transposed: X is
// stored [cols×rows]).
static void plain_operand(long *dims, long *strides, long rows, long cols, long ld, int transposed) {
    dims[0] = rows;
    dims[1] = cols;
    strides[0] = transposed ? 1 : ld;
    strides[1] = transposed ? ld : 1;
}

static dnnl_status_t describe(dnnl_memory_desc_t *md, int ndims, const long *dims, const long *strides, int bf16) {
    dnnl_dims_t d, st;
    for (int i = 0; i < ndims; i++) {
        d[i] = dims[i];
        st[i] = strides[i];
    }
    return mng_p_dnnl_memory_desc_init_by_strides(md, ndims, d, bf16 ? dnnl_bf16 : dnnl_f32, st);
}

static void destroy_entry(MngCached *header) {
    Entry *entry = (Entry *)header;
    if (entry->primitive != NULL) mng_p_dnnl_primitive_destroy(entry->primitive);
    free(entry);
}

static dnnl_status_t create(const void *raw_key, MngCached **out) {
    const Key *key = raw_key;
    Entry *entry = calloc(1, sizeof(Entry));
    if (entry == NULL) return dnnl_out_of_memory;
    entry->key = *key;
    entry->header = (MngCached){.destroy = destroy_entry, .key = &entry->key, .key_size = sizeof(Key)};
    dnnl_status_t s;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_matmul_desc_t desc;
    int nd = key->ndims;
    // The bias [n], broadcast over the rows and the batch.
    long bias_dims[4] = {1, 1, 1, 1}, bias_strides[4] = {0, 0, 0, 0};
    bias_dims[nd - 1] = key->c_dims[nd - 1];
    bias_strides[nd - 1] = 1;
    for (int i = nd - 2; i >= 0; i--) bias_strides[i] = bias_dims[nd - 1];
    if ((s = describe(&entry->a, nd, key->a_dims, key->a_strides, key->a_bf16)) != dnnl_success) goto done;
    if ((s = describe(&entry->b, nd, key->b_dims, key->b_strides, key->b_bf16)) != dnnl_success) goto done;
    if ((s = describe(&entry->c, nd, key->c_dims, key->c_strides, key->c_bf16)) != dnnl_success) goto done;
    if ((s = describe(&entry->bias, nd, bias_dims, bias_strides, 0)) != dnnl_success) goto done;
    if ((s = mng_p_dnnl_matmul_desc_init(&desc, &entry->a, &entry->b, key->bias ? &entry->bias : NULL, &entry->c)) != dnnl_success)
        goto done;
    if ((s = mng_p_dnnl_primitive_attr_create(&attr)) != dnnl_success) goto done;
    s = mng_p_dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success && key->alpha != 1) s = mng_p_dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha);
    if (s == dnnl_success && (key->beta != 0 || key->activation != MNG_ACTIVATION_NONE)) {
        s = mng_p_dnnl_post_ops_create(&post);
        // The activation first, then the sum: C = act(alpha·A·B + bias) + beta·C.
        if (s == dnnl_success && key->activation == MNG_ACTIVATION_GELU_ERF)
            s = mng_p_dnnl_post_ops_append_eltwise(post, 1, dnnl_eltwise_gelu_erf, 0, 0);
        if (s == dnnl_success && key->activation == MNG_ACTIVATION_SWISH)
            s = mng_p_dnnl_post_ops_append_eltwise(post, 1, dnnl_eltwise_swish, key->act_alpha, 0);
        if (s == dnnl_success && key->beta != 0) s = mng_p_dnnl_post_ops_append_sum(post, key->beta);
        if (s == dnnl_success) s = mng_p_dnnl_primitive_attr_set_post_ops(attr, post);
    }
    if (s == dnnl_success) s = mng_p_dnnl_primitive_desc_create(&pd, &desc, attr, mng_engine, NULL);
    if (s == dnnl_success) s = mng_p_dnnl_primitive_create(&entry->primitive, pd);
    if (s == dnnl_success) {
        entry->scratch = *mng_p_dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        entry->scratch_size = mng_p_dnnl_memory_desc_get_size(&entry->scratch);
    }
done:
    if (pd != NULL) mng_p_dnnl_primitive_desc_destroy(pd);
    if (post != NULL) mng_p_dnnl_post_ops_destroy(post);
    if (attr != NULL) mng_p_dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        destroy_entry(&entry->header);
        return s;
    }
    __atomic_add_fetch(&created_count, 1, __ATOMIC_RELAXED);
    *out = &entry->header;
    return dnnl_success;
}

// ---- Products ------------------------------------------------------------------------------------

// op(X) rounded to bf16, contiguous: rows × cols of the STORED matrix (stored row-major, ld).
static void round_rows(const float *x, long rows, long cols, long ld, uint16_t *out) {
    for (long r = 0; r < rows; r++) mng_round_bf16(x + r * ld, out + r * cols, cols);
}

// Runs the cached primitive for `key` on operands already in its types and layouts.
static int execute(const Key *key, const void *a, const void *b, const float *bias, void *c, int threads) {
    dnnl_status_t s;
    dnnl_stream_t stream = mng_thread_stream(&s);
    if (stream == NULL) return (int)s;
    MngCached *cached;
    if ((s = mng_cache_lookup(&matmul_cache, key, sizeof(Key), create, &cached)) != dnnl_success) return (int)s;
    Entry *entry = (Entry *)cached;
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, mbias = NULL, ms = NULL;
    void *scratch = NULL;
    s = mng_p_dnnl_memory_create(&ma, &entry->a, mng_engine, (void *)a);
    if (s == dnnl_success) s = mng_p_dnnl_memory_create(&mb, &entry->b, mng_engine, (void *)b);
    if (s == dnnl_success) s = mng_p_dnnl_memory_create(&mc, &entry->c, mng_engine, c);
    if (s == dnnl_success && key->bias) s = mng_p_dnnl_memory_create(&mbias, &entry->bias, mng_engine, (void *)bias);
    if (s == dnnl_success && entry->scratch_size > 0 && (scratch = mng_aligned(entry->scratch_size)) == NULL) s = dnnl_out_of_memory;
    if (s == dnnl_success) s = mng_p_dnnl_memory_create(&ms, &entry->scratch, mng_engine, scratch);
    if (s == dnnl_success) {
        mng_set_threads(threads);
        dnnl_exec_arg_t args[5] = {
            {DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}, {DNNL_ARG_SCRATCHPAD, ms}, {DNNL_ARG_BIAS, mbias}};
        s = mng_p_dnnl_primitive_execute(entry->primitive, stream, key->bias ? 5 : 4, args);
        if (s == dnnl_success) s = mng_p_dnnl_stream_wait(stream);
        if (s == dnnl_success) {
            __atomic_add_fetch(&executed_count, 1, __ATOMIC_RELAXED);
            thread_executed_count++;
        }
    }
    if (ma) mng_p_dnnl_memory_destroy(ma);
    if (mb) mng_p_dnnl_memory_destroy(mb);
    if (mc) mng_p_dnnl_memory_destroy(mc);
    if (mbias) mng_p_dnnl_memory_destroy(mbias);
    if (ms) mng_p_dnnl_memory_destroy(ms);
    free(scratch);
    mng_cache_release(&matmul_cache, cached);
    return (int)s;
}

int mng_dnnl_sgemm(int bf16, int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                   const float *b, long ldb, float beta, float *c, long ldc, int threads) {
    if (!mng_dnnl_load(NULL, 0)) return -1;
    Key key = blank_key(2, bf16, bf16, 0);
    // bf16 operands are rounded into contiguous buffers: A as stored ([m×k], transposed [k×m]), B
    // as stored ([k×n], transposed [n×k]).
    plain_operand(key.a_dims, key.a_strides, m, k, bf16 ? (transA ? m : k) : lda, transA);
    plain_operand(key.b_dims, key.b_strides, k, n, bf16 ? (transB ? k : n) : ldb, transB);
    plain_operand(key.c_dims, key.c_strides, m, n, ldc, 0);
    key.alpha = alpha;
    key.beta = beta;
    if (!bf16) return execute(&key, a, b, NULL, c, threads);
    uint16_t *a16 = malloc(sizeof(uint16_t) * (size_t)(m * k));
    uint16_t *b16 = malloc(sizeof(uint16_t) * (size_t)(k * n));
    int status = (int)dnnl_out_of_memory;
    if (a16 != NULL && b16 != NULL) {
        round_rows(a, transA ? k : m, transA ? m : k, lda, a16);
        round_rows(b, transB ? n : k, transB ? k : n, ldb, b16);
        status = execute(&key, a16, b16, NULL, c, threads);
    }
    free(a16);
    free(b16);
    return status;
}

int mng_dnnl_linear(const MngLinear *spec, const void *a, const void *w, const float *bias, void *c, int threads) {
    if (!mng_dnnl_load(NULL, 0)) return -1;
    if (spec->accumulate && spec->c_bf16) return -1;
    if (spec->fp32 && (spec->a_bf16 || spec->c_bf16)) return -1;
    int bf16 = !spec->fp32;
    Key key = blank_key(2, bf16, bf16, spec->c_bf16); // a bf16 A reaches the primitive rounded here if need be
    plain_operand(key.a_dims, key.a_strides, spec->m, spec->k, spec->a_bf16 || !bf16 ? spec->lda : spec->k, 0);
    plain_operand(key.b_dims, key.b_strides, spec->k, spec->n, spec->k, 1);
    plain_operand(key.c_dims, key.c_strides, spec->m, spec->n, spec->ldc, 0);
    key.bias = bias != NULL;
    key.activation = spec->activation;
    key.act_alpha = spec->activation == MNG_ACTIVATION_SWISH ? spec->alpha : 0;
    key.beta = spec->accumulate ? 1 : 0;
    if (spec->a_bf16 || !bf16) return execute(&key, a, w, bias, c, threads);
    uint16_t *a16 = malloc(sizeof(uint16_t) * (size_t)(spec->m * spec->k));
    if (a16 == NULL) return (int)dnnl_out_of_memory;
    round_rows(a, spec->m, spec->k, spec->lda, a16);
    int status = execute(&key, a16, w, bias, c, threads);
    free(a16);
    return status;
}

int mng_dnnl_matmul(const MngMatmul *spec, const void *a, const void *b, void *c, int threads) {
    if (!mng_dnnl_load(NULL, 0)) return -1;
    if (spec->ndims < 2 || spec->ndims > 4) return -1;
    Key key = blank_key(spec->ndims, spec->a_bf16, spec->b_bf16, spec->c_bf16);
    for (int i = 0; i < spec->ndims; i++) {
        key.a_dims[i] = spec->a_dims[i], key.a_strides[i] = spec->a_strides[i];
        key.b_dims[i] = spec->b_dims[i], key.b_strides[i] = spec->b_strides[i];
        key.c_dims[i] = spec->c_dims[i], key.c_strides[i] = spec->c_strides[i];
    }
    key.alpha = spec->alpha;
    return execute(&key, a, b, NULL, c, threads);
}

#endif
