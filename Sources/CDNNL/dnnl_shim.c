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

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if __has_include(<oneapi/dnnl/dnnl.h>)
#include <oneapi/dnnl/dnnl.h>
#define MNG_HAVE_DNNL_HEADERS 1
#else
#define MNG_HAVE_DNNL_HEADERS 0
#endif

static long created_count, executed_count;

void mng_dnnl_counters(long *created, long *executed) {
    *created = __atomic_load_n(&created_count, __ATOMIC_RELAXED);
    *executed = __atomic_load_n(&executed_count, __ATOMIC_RELAXED);
}

static inline uint16_t to_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) return (uint16_t)((bits >> 16) | 0x40); // NaN stays NaN
    bits += 0x7fffu + ((bits >> 16) & 1u); // round to nearest, ties to even
    return (uint16_t)(bits >> 16);
}

void mng_round_bf16(const float *x, unsigned short *out, long count) {
    for (long i = 0; i < count; i++) out[i] = to_bf16(x[i]);
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
int mng_dnnl_linear_bf16(long m, long n, long k, const float *a, long lda, const unsigned short *w, float beta, float *c,
                         long ldc, int threads) {
    return -1;
}

#else

// The functions used, as pointers of their declared types.
#define MNG_DNNL_FUNCTIONS(X)                                                                                          \
    X(dnnl_engine_create)                                                                                              \
    X(dnnl_stream_create)                                                                                              \
    X(dnnl_stream_wait)                                                                                                \
    X(dnnl_memory_desc_init_by_strides)                                                                                \
    X(dnnl_matmul_desc_init)                                                                                           \
    X(dnnl_primitive_attr_create)                                                                                      \
    X(dnnl_primitive_attr_destroy)                                                                                     \
    X(dnnl_primitive_attr_set_output_scales)                                                                           \
    X(dnnl_primitive_attr_set_post_ops)                                                                                \
    X(dnnl_primitive_attr_set_scratchpad_mode)                                                                         \
    X(dnnl_post_ops_create)                                                                                            \
    X(dnnl_post_ops_destroy)                                                                                           \
    X(dnnl_post_ops_append_sum)                                                                                        \
    X(dnnl_primitive_desc_create)                                                                                      \
    X(dnnl_primitive_desc_destroy)                                                                                     \
    X(dnnl_primitive_desc_query_md)                                                                                    \
    X(dnnl_primitive_create)                                                                                           \
    X(dnnl_primitive_destroy)                                                                                          \
    X(dnnl_primitive_execute)                                                                                          \
    X(dnnl_memory_create)                                                                                              \
    X(dnnl_memory_destroy)                                                                                             \
    X(dnnl_memory_set_data_handle)                                                                                     \
    X(dnnl_memory_desc_get_size)                                                                                       \
    X(dnnl_version)                                                                                                    \
    X(dnnl_get_effective_cpu_isa)

#define MNG_DECLARE(name) static __typeof__(&name) p_##name;
MNG_DNNL_FUNCTIONS(MNG_DECLARE)
#undef MNG_DECLARE

static void (*p_omp_set_num_threads)(int);

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int loaded;
static char load_message[512];
static char version_text[96];
static dnnl_engine_t engine;

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
    p_##name = (__typeof__(&name))dlsym(library, #name);                                                               \
    if (p_##name == NULL) {                                                                                            \
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
    dnnl_status_t status = p_dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (status != dnnl_success) {
        snprintf(load_message, sizeof load_message, "oneDNN could not create its CPU engine (status %d)", (int)status);
        return;
    }
    const dnnl_version_t *v = p_dnnl_version();
    snprintf(version_text, sizeof version_text, "%d.%d.%d (%s)", v->major, v->minor, v->patch,
             isa_name(p_dnnl_get_effective_cpu_isa()));
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
    dnnl_cpu_isa_t isa = p_dnnl_get_effective_cpu_isa();
    return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}

// ---- The primitive cache ------------------------------------------------------------------------

typedef struct {
    int bf16, transA, transB; // bf16: 1 = both operands rounded here, 2 = B given in bf16 already
    long m, n, k, lda, ldb, ldc;
    float alpha, beta;
} Key;

typedef struct {
    Key key;
    int references; // the cache's own, plus one per product running it
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t a, b, c;
    // The primitive's scratchpad, allocated per product: with oneDNN's default (one library-owned
    // scratchpad per primitive) two threads running the same primitive overwrite each other's.
    dnnl_memory_desc_t scratch;
    size_t scratch_size;
} Entry;

enum { CACHE_SIZE = 128 };
static Entry *cache[CACHE_SIZE];
static unsigned long cache_next;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static int same_key(const Key *x, const Key *y) { return memcmp(x, y, sizeof(Key)) == 0; }

// Descriptors of op(X)[rows×cols] stored row-major with leading dimension ld (transposed: X is
// stored [cols×rows]).
static dnnl_status_t strided(dnnl_memory_desc_t *md, long rows, long cols, long ld, int transposed, dnnl_data_type_t type) {
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides;
    if (transposed) {
        strides[0] = 1;
        strides[1] = ld;
    } else {
        strides[0] = ld;
        strides[1] = 1;
    }
    return p_dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides);
}

static dnnl_status_t create(const Key *key, Entry *entry) {
    dnnl_data_type_t in = key->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_status_t s;
    // bf16 operands are converted into contiguous buffers: A as stored ([m×k], transposed [k×m]),
    // B as stored ([k×n], transposed [n×k]).
    long lda = key->bf16 ? (key->transA ? key->m : key->k) : key->lda;
    long ldb = key->bf16 == 1 ? (key->transB ? key->k : key->n) : key->ldb;
    if ((s = strided(&entry->a, key->m, key->k, lda, key->transA, in)) != dnnl_success) return s;
    if ((s = strided(&entry->b, key->k, key->n, ldb, key->transB, in)) != dnnl_success) return s;
    if ((s = strided(&entry->c, key->m, key->n, key->ldc, 0, dnnl_f32)) != dnnl_success) return s;
    dnnl_matmul_desc_t desc;
    if ((s = p_dnnl_matmul_desc_init(&desc, &entry->a, &entry->b, NULL, &entry->c)) != dnnl_success) return s;
    dnnl_primitive_attr_t attr;
    if ((s = p_dnnl_primitive_attr_create(&attr)) != dnnl_success) return s;
    dnnl_post_ops_t post = NULL;
    s = p_dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success && key->alpha != 1) s = p_dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha);
    if (s == dnnl_success && key->beta != 0) {
        s = p_dnnl_post_ops_create(&post);
        if (s == dnnl_success) s = p_dnnl_post_ops_append_sum(post, key->beta);
        if (s == dnnl_success) s = p_dnnl_primitive_attr_set_post_ops(attr, post);
    }
    dnnl_primitive_desc_t pd = NULL;
    if (s == dnnl_success) s = p_dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    if (s == dnnl_success) s = p_dnnl_primitive_create(&entry->primitive, pd);
    if (s == dnnl_success) {
        entry->scratch = *p_dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        entry->scratch_size = p_dnnl_memory_desc_get_size(&entry->scratch);
    }
    if (pd != NULL) p_dnnl_primitive_desc_destroy(pd);
    if (post != NULL) p_dnnl_post_ops_destroy(post);
    p_dnnl_primitive_attr_destroy(attr);
    if (s == dnnl_success) __atomic_add_fetch(&created_count, 1, __ATOMIC_RELAXED);
    return s;
}

static void release_locked(Entry *entry) {
    if (--entry->references == 0) {
        p_dnnl_primitive_destroy(entry->primitive);
        free(entry);
    }
}

// The cached primitive for `key`, with a reference for the caller (release it with `release`).
// A miss creates it and replaces the oldest entry, round-robin; a replaced entry still running in
// another thread lives until that product releases it.
static dnnl_status_t lookup(const Key *key, Entry **out) {
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < CACHE_SIZE; i++) {
        if (cache[i] != NULL && same_key(&cache[i]->key, key)) {
            cache[i]->references++;
            *out = cache[i];
            pthread_mutex_unlock(&cache_lock);
            return dnnl_success;
        }
    }
    Entry *fresh = calloc(1, sizeof(Entry));
    if (fresh == NULL) {
        pthread_mutex_unlock(&cache_lock);
        return dnnl_out_of_memory;
    }
    fresh->key = *key;
    dnnl_status_t s = create(key, fresh);
    if (s != dnnl_success) {
        free(fresh);
        pthread_mutex_unlock(&cache_lock);
        return s;
    }
    Entry **slot = &cache[cache_next++ % CACHE_SIZE];
    if (*slot != NULL) release_locked(*slot);
    fresh->references = 2; // the cache's and the caller's
    *slot = fresh;
    *out = fresh;
    pthread_mutex_unlock(&cache_lock);
    return dnnl_success;
}

static void release(Entry *entry) {
    pthread_mutex_lock(&cache_lock);
    release_locked(entry);
    pthread_mutex_unlock(&cache_lock);
}

// ---- Products ------------------------------------------------------------------------------------

static __thread dnnl_stream_t thread_stream;


// op(X) rounded to bf16, contiguous: rows × cols of the STORED matrix (stored row-major, ld).
static void round_rows(const float *x, long rows, long cols, long ld, uint16_t *out) {
    for (long r = 0; r < rows; r++) {
        const float *row = x + r * ld;
        uint16_t *dst = out + r * cols;
        for (long j = 0; j < cols; j++) dst[j] = to_bf16(row[j]);
    }
}

// Runs the cached primitive for `key` on operands already in its types and layouts.
static int execute(const Key *key, const void *a, const void *b, float *c, int threads) {
    dnnl_status_t s;
    if (thread_stream == NULL && (s = p_dnnl_stream_create(&thread_stream, engine, dnnl_stream_default_flags)) != dnnl_success)
        return (int)s;
    Entry *entry;
    if ((s = lookup(key, &entry)) != dnnl_success) return (int)s;
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, ms = NULL;
    void *scratch = NULL;
    s = p_dnnl_memory_create(&ma, &entry->a, engine, (void *)a);
    if (s == dnnl_success) s = p_dnnl_memory_create(&mb, &entry->b, engine, (void *)b);
    if (s == dnnl_success) s = p_dnnl_memory_create(&mc, &entry->c, engine, c);
    if (s == dnnl_success && entry->scratch_size > 0 && posix_memalign(&scratch, 64, entry->scratch_size) != 0) {
        scratch = NULL;
        s = dnnl_out_of_memory;
    }
    if (s == dnnl_success) s = p_dnnl_memory_create(&ms, &entry->scratch, engine, scratch);
    if (s == dnnl_success) {
        if (p_omp_set_num_threads != NULL) p_omp_set_num_threads(threads > 0 ? threads : 1);
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}, {DNNL_ARG_SCRATCHPAD, ms}};
        s = p_dnnl_primitive_execute(entry->primitive, thread_stream, 4, args);
        if (s == dnnl_success) s = p_dnnl_stream_wait(thread_stream);
        if (s == dnnl_success) __atomic_add_fetch(&executed_count, 1, __ATOMIC_RELAXED);
    }
    if (ma) p_dnnl_memory_destroy(ma);
    if (mb) p_dnnl_memory_destroy(mb);
    if (mc) p_dnnl_memory_destroy(mc);
    if (ms) p_dnnl_memory_destroy(ms);
    free(scratch);
    release(entry);
    return (int)s;
}

int mng_dnnl_sgemm(int bf16, int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                   const float *b, long ldb, float beta, float *c, long ldc, int threads) {
    if (!mng_dnnl_load(NULL, 0)) return -1;
    Key key = {.bf16 = bf16 != 0, .transA = transA != 0, .transB = transB != 0, .m = m, .n = n, .k = k,
               .lda = bf16 ? 0 : lda, .ldb = bf16 ? 0 : ldb, .ldc = ldc, .alpha = alpha, .beta = beta};
    if (!bf16) return execute(&key, a, b, c, threads);
    uint16_t *a16 = malloc(sizeof(uint16_t) * (size_t)(m * k));
    uint16_t *b16 = malloc(sizeof(uint16_t) * (size_t)(k * n));
    int status = (int)dnnl_out_of_memory;
    if (a16 != NULL && b16 != NULL) {
        // Stored shapes: A is [m×k] (transposed: [k×m]); B is [k×n] (transposed: [n×k]).
        round_rows(a, transA ? k : m, transA ? m : k, lda, a16);
        round_rows(b, transB ? n : k, transB ? k : n, ldb, b16);
        status = execute(&key, a16, b16, c, threads);
    }
    free(a16);
    free(b16);
    return status;
}

int mng_dnnl_linear_bf16(long m, long n, long k, const float *a, long lda, const unsigned short *w, float beta, float *c,
                         long ldc, int threads) {
    if (!mng_dnnl_load(NULL, 0)) return -1;
    Key key = {.bf16 = 2, .transA = 0, .transB = 1, .m = m, .n = n, .k = k, .lda = 0, .ldb = k, .ldc = ldc, .alpha = 1, .beta = beta};
    uint16_t *a16 = malloc(sizeof(uint16_t) * (size_t)(m * k));
    if (a16 == NULL) return (int)dnnl_out_of_memory;
    round_rows(a, m, k, lda, a16);
    int status = execute(&key, a16, w, c, threads);
    free(a16);
    return status;
}

#endif
