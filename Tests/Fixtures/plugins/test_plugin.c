/*
 * A configurable C plugin for the host's tests, compiled by the tests with `cc -shared`.
 * Macros choose the misbehaviour under test:
 *   TEST_ABI_MAJOR / TEST_ABI_MINOR   descriptor versions (default: the header's)
 *   TEST_TOOLCHAIN                    descriptor toolchain string (default "none")
 *   TEST_CRASH_AT_LOAD                a load-time constructor dereferences NULL
 *   TEST_HANG_AT_LOAD                 a load-time constructor sleeps forever
 *   TEST_NO_ENTRY                     the entry symbol is not exported
 *   TEST_ID                           the component id (default "test-probe")
 *   TEST_VERSION                      the plugin version string (default "1.0.0")
 *   TEST_ATEXIT_FORGE                 an atexit handler prints a forged scan report on stdout
 *   TEST_CHATTY                       a load-time constructor prints 64 MiB on stdout
 *   TEST_HUGE_METADATA                the metadata JSON is 8 MiB (a long summary)
 *   TEST_BENCHMARKS                   the component declares benchmarks and answers the reserved
 *                                     operation "benchmark": "test.sleep" (times usleep(1000), a good
 *                                     result), and bad results the host must refuse: "test.nan" (a
 *                                     null sample: NaN as JSON carries it), "test.negative" (a
 *                                     negative sample), "test.missing" (no "samples")
 * Operations of the component: "echo" (returns its inputs and options), "fail" (MNG_ERROR),
 * "nested" (evaluates segmentation-metrics through the host services), "progress" (reports
 * progress, stops early when cancelled), and misbehaviours for the reliability tests: "exit"
 * (exit(0) mid-call), "abort", "segv", "hang" (sleeps forever), "bad_count" (tensor_count
 * 2^63 + 5), "bad_shape" (a [2^40, 2^40, 2^40] tensor), "alloc" (touches 1 GiB of heap),
 * "print" (writes to stdout and stderr, then succeeds), and with an ABI 1.1 header "record" (two
 * parts of three epochs, each recording loss and accuracy) and "bad_record" (records the host must
 * drop: a huge count, NULL arrays, a NULL name, a negative step, twice the same name; then one
 * good row). Compiled against Tests/Fixtures/plugins/abi-1.0/menagerie.h it is a 1.0 plugin
 * without these two.
 */
#include "menagerie.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef TEST_ABI_MAJOR
#define TEST_ABI_MAJOR MENAGERIE_ABI_MAJOR
#endif
#ifndef TEST_ABI_MINOR
#define TEST_ABI_MINOR MENAGERIE_ABI_MINOR
#endif
#ifndef TEST_TOOLCHAIN
#define TEST_TOOLCHAIN MENAGERIE_TOOLCHAIN_NONE
#endif
#ifndef TEST_ID
#define TEST_ID "test-probe"
#endif
#ifndef TEST_VERSION
#define TEST_VERSION "1.0.0"
#endif

#ifdef TEST_CRASH_AT_LOAD
#include <signal.h>
__attribute__((constructor)) static void crash(void) { raise(SIGSEGV); }
#endif
#ifdef TEST_HANG_AT_LOAD
__attribute__((constructor)) static void hang(void) {
    for (;;) sleep(1);
}
#endif

#ifdef TEST_ATEXIT_FORGE
static void forge(void) {
    printf("{\"ok\":true,\"abi\":\"1.0\",\"toolchain\":\"none\",\"metadata\":{\"name\":\"forged\",\"version\":\"6.6.6\","
           "\"summary\":\"forged\",\"license\":\"MIT\",\"authors\":[],\"components\":[{\"id\":\"forged-component\","
           "\"kind\":\"metric\",\"summary\":\"forged\",\"operations\":[],\"options\":{}}]}}\n");
    fflush(stdout);
}
__attribute__((constructor)) static void install_forge(void) { atexit(forge); }
#endif
#ifdef TEST_CHATTY
__attribute__((constructor)) static void chatter(void) {
    static char line[1024];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 2] = '\n';
    for (int i = 0; i < 65536; i++) fputs(line, stdout);
    fflush(stdout);
}
#endif

#ifdef MNG_HAS_SERVICE
#define RECORD_OPERATIONS ",{\"name\":\"record\",\"summary\":\"records metrics in two parts\",\"inputs\":[],\"outputs\":[]}" \
    ",{\"name\":\"bad_record\",\"summary\":\"records the host must drop\",\"inputs\":[],\"outputs\":[]}"
#else
#define RECORD_OPERATIONS ""
#endif

#ifdef TEST_BENCHMARKS
#define BENCHMARK_DECLARATIONS "\"benchmarks\":[" \
    "{\"name\":\"test.sleep\",\"unit\":\"ms\",\"summary\":\"usleep(1000)\",\"target\":5}," \
    "{\"name\":\"test.nan\",\"unit\":\"ms\",\"summary\":\"a NaN sample\"}," \
    "{\"name\":\"test.negative\",\"unit\":\"ms\",\"summary\":\"a negative sample\"}," \
    "{\"name\":\"test.missing\",\"unit\":\"ms\",\"summary\":\"no samples\"}],"
#else
#define BENCHMARK_DECLARATIONS ""
#endif

static const char METADATA[] =
    "{\"name\":\"" TEST_ID "\",\"version\":\"" TEST_VERSION "\",\"summary\":\"host test plugin\",\"license\":\"MIT\","
    "\"authors\":[\"tests\"],\"paper\":{\"title\":\"A test paper\",\"url\":\"https://example.org/paper\"},"
    "\"components\":[{\"id\":\"" TEST_ID "\",\"kind\":\"generator\",\"summary\":\"echoes, fails, nests\","
    "\"operations\":[{\"name\":\"echo\",\"summary\":\"returns inputs\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"fail\",\"summary\":\"fails\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"nested\",\"summary\":\"calls segmentation-metrics\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"progress\",\"summary\":\"reports progress\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"exit\",\"summary\":\"calls exit(0)\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"abort\",\"summary\":\"calls abort()\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"segv\",\"summary\":\"writes through NULL\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"hang\",\"summary\":\"never returns\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"alloc\",\"summary\":\"touches 1 GiB\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"print\",\"summary\":\"prints\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"bad_count\",\"summary\":\"tensor_count 2^63+5\",\"inputs\":[],\"outputs\":[]},"
    "{\"name\":\"bad_shape\",\"summary\":\"a 2^120-element shape\",\"inputs\":[],\"outputs\":[]}"
    RECORD_OPERATIONS "],"
    BENCHMARK_DECLARATIONS
    "\"options\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"count\":{\"type\":\"integer\",\"default\":3},\"ratio\":{\"type\":\"number\",\"default\":0.5},"
    "\"name\":{\"type\":\"string\",\"default\":\"x\",\"enum\":[\"x\",\"y\"]},\"flag\":{\"type\":\"boolean\",\"default\":false},"
    "\"sizes\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"default\":[1,2]}}}}]}";

typedef struct owner {
    char *text;
    mng_tensor *tensors;
    uint64_t count;
} owner;

static const mng_host_services *services;

#ifdef TEST_HUGE_METADATA
/* 8 MiB of metadata: the summary is padded with spaces. */
static char *huge_metadata;
__attribute__((constructor)) static void make_huge(void) {
    size_t pad = (size_t)8 << 20, n = strlen(METADATA);
    huge_metadata = malloc(n + pad + 1);
    const char *at = strstr(METADATA, "host test plugin");
    size_t head = (size_t)(at - METADATA) + strlen("host test plugin");
    memcpy(huge_metadata, METADATA, head);
    memset(huge_metadata + head, ' ', pad);
    strcpy(huge_metadata + head + pad, METADATA + head);
}
#define PLUGIN_METADATA huge_metadata
#else
#define PLUGIN_METADATA METADATA
#endif

static int32_t set_text(mng_response *r, int32_t status, const char *text) {
    owner *o = calloc(1, sizeof *o);
    o->text = strdup(text);
    r->status = status;
    if (status == MNG_OK) r->result_json = o->text; else r->error = o->text;
    r->owner = o;
    return status;
}

static int32_t plugin_init(const mng_host_services *s, void **state, const char **error) {
    (void)error;
    services = s;
    *state = (void *)s;
    return MNG_OK;
}

static int32_t plugin_invoke(void *state, const char *component, const char *operation, const mng_request *req, mng_response *r) {
    (void)state;
    (void)component;
    if (strcmp(operation, "fail") == 0) return set_text(r, MNG_ERROR, "test-probe: asked to fail (this message must reach the user)");
#ifdef TEST_BENCHMARKS
    if (strcmp(operation, "benchmark") == 0) {
        /* Options {"names": [...], "repeats": N}: read with strstr (enough for a test). */
        const char *opts = req && req->options_json ? req->options_json : "{}";
        const char *rp = strstr(opts, "\"repeats\":");
        int repeats = rp ? atoi(rp + 10) : 3;
        if (repeats < 1 || repeats > 1000) repeats = 3;
        char buf[8192];
        size_t n = (size_t)snprintf(buf, sizeof buf, "{\"records\":[");
        int first = 1;
        if (strstr(opts, "\"test.sleep\"")) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"name\":\"test.sleep\",\"unit\":\"ms\",\"samples\":[");
            for (int i = 0; i < repeats; i++) {
                struct timespec t0, t1;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                usleep(1000);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
                n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%.6f", i ? "," : "", ms);
            }
            n += (size_t)snprintf(buf + n, sizeof buf - n, "]}");
            first = 0;
        }
        if (strstr(opts, "\"test.nan\"")) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s{\"name\":\"test.nan\",\"unit\":\"ms\",\"samples\":[1.0,null]}", first ? "" : ",");
            first = 0;
        }
        if (strstr(opts, "\"test.negative\"")) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s{\"name\":\"test.negative\",\"unit\":\"ms\",\"samples\":[-2.5]}", first ? "" : ",");
            first = 0;
        }
        if (strstr(opts, "\"test.missing\"")) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s{\"name\":\"test.missing\",\"unit\":\"ms\"}", first ? "" : ",");
        }
        snprintf(buf + n, sizeof buf - n, "]}");
        return set_text(r, MNG_OK, buf);
    }
#endif
    if (strcmp(operation, "exit") == 0) exit(0);
    if (strcmp(operation, "abort") == 0) abort();
    if (strcmp(operation, "segv") == 0) { volatile int *p = NULL; *p = 1; }
    if (strcmp(operation, "hang") == 0) {
        fprintf(stderr, "test-probe: hang started\n");
        fflush(stderr);
        for (;;) sleep(1);
    }
    if (strcmp(operation, "print") == 0) {
        printf("test-probe prints on stdout\n");
        fflush(stdout);
        fprintf(stderr, "test-probe prints on stderr\n");
        return set_text(r, MNG_OK, "{\"printed\":true}");
    }
    if (strcmp(operation, "alloc") == 0) {
        size_t n = (size_t)1 << 30;
        char *big = malloc(n);
        if (!big) return set_text(r, MNG_ERROR, "test-probe: malloc of 1 GiB failed");
        for (size_t i = 0; i < n; i += 4096) big[i] = 1;
        free(big);
        return set_text(r, MNG_OK, "{\"allocated\":1073741824}");
    }
    if (strcmp(operation, "bad_count") == 0 || strcmp(operation, "bad_shape") == 0) {
        static int64_t shape[3] = {(int64_t)1 << 40, (int64_t)1 << 40, (int64_t)1 << 40};
        static float one = 1;
        static mng_tensor bad = {"bad", MNG_F32, 3, shape, &one, 4};
        set_text(r, MNG_OK, "{}");
        r->tensors = &bad;
        r->tensor_count = strcmp(operation, "bad_count") == 0 ? ((uint64_t)1 << 63) + 5 : 1;
        return MNG_OK;
    }
    if (strcmp(operation, "echo") == 0 || *operation == 0) {
        /* Result: the options JSON and the seed; tensors: the inputs, copied. */
        char buf[4096];
        snprintf(buf, sizeof buf, "{\"options\":%s,\"seed\":%llu,\"inputs\":%llu,\"scratch\":\"%s\"}", req->options_json,
                 (unsigned long long)services->seed, (unsigned long long)req->tensor_count, services->scratch_dir);
        set_text(r, MNG_OK, buf);
        owner *o = r->owner;
        o->count = req->tensor_count;
        o->tensors = calloc(o->count ? o->count : 1, sizeof(mng_tensor));
        for (uint64_t i = 0; i < o->count; i++) {
            mng_tensor t = req->tensors[i];
            void *copy = malloc(t.nbytes ? t.nbytes : 1);
            memcpy(copy, t.data, t.nbytes);
            int64_t *shape = calloc(t.rank ? (size_t)t.rank : 1, sizeof(int64_t));
            memcpy(shape, t.shape, (size_t)t.rank * sizeof(int64_t));
            o->tensors[i] = (mng_tensor){strdup(t.name), t.dtype, t.rank, shape, copy, t.nbytes};
        }
        r->tensors = o->tensors;
        r->tensor_count = o->count;
        return MNG_OK;
    }
    if (strcmp(operation, "nested") == 0) {
        const char *error = NULL;
        const mng_component_handle *h = services->resolve(services->context, "segmentation-metrics", &error);
        if (!h) return set_text(r, MNG_NOT_FOUND, error ? error : "resolve failed");
        uint8_t pred[4] = {0, 1, 1, 1}, target[4] = {0, 1, 0, 1};
        int64_t shape[2] = {2, 2};
        mng_tensor ts[2] = {{"prediction", MNG_U8, 2, shape, pred, 4}, {"target", MNG_U8, 2, shape, target, 4}};
        mng_request nested_req = {sizeof nested_req, 0, "{}", ts, 2};
        mng_response nested = {sizeof nested, 0, NULL, NULL, NULL, 0, NULL};
        int32_t status = services->invoke(services->context, h, "evaluate", &nested_req, &nested);
        if (status != MNG_OK) {
            char buf[1024];
            snprintf(buf, sizeof buf, "nested call failed: %s", nested.error ? nested.error : "?");
            services->free_response(services->context, &nested);
            return set_text(r, status, buf);
        }
        char buf[4096];
        snprintf(buf, sizeof buf, "{\"nested\":%s}", nested.result_json);
        services->free_response(services->context, &nested);
        return set_text(r, MNG_OK, buf);
    }
    if (strcmp(operation, "progress") == 0) {
        fprintf(stderr, "test-probe: progress started\n");
        fflush(stderr);
        int done = 0;
        for (; done < 50; done++) {
            if (services->is_cancelled(services->context)) break;
            services->progress(services->context, done + 1, 50, "step");
            services->log(services->context, MNG_LOG_INFO, "a step");
            usleep(20000);
        }
        char buf[128];
        snprintf(buf, sizeof buf, "{\"done\":%d}", done);
        return set_text(r, done < 50 ? MNG_CANCELLED : MNG_OK, done < 50 ? "test-probe: cancelled" : buf);
    }
#ifdef MNG_HAS_SERVICE
    if (strcmp(operation, "record") == 0 || strcmp(operation, "bad_record") == 0) {
        if (!MNG_HAS_SERVICE(services, phase) || !MNG_HAS_SERVICE(services, record))
            return set_text(r, MNG_UNSUPPORTED, "test-probe: this host has no phase/record services (ABI 1.0)");
        const char *names[2] = {"loss", "accuracy"};
        if (strcmp(operation, "bad_record") == 0) {
            const char *unnamed[2] = {"loss", NULL}, *twice[2] = {"loss", "loss"};
            double values[2] = {1, 2};
            services->record(services->context, "epoch", 1, ((uint64_t)1 << 62) + 1, names, values);
            services->record(services->context, "epoch", 1, 2, NULL, values);
            services->record(services->context, "epoch", 1, 2, names, NULL);
            services->record(services->context, "epoch", 1, 2, unnamed, values);
            services->record(services->context, "epoch", -1, 2, names, values);
            services->record(services->context, "epoch", 1, 2, twice, values);
            services->phase(services->context, 7, 3, "index beyond count");
            services->record(services->context, "epoch", 1, 2, names, values);
            return set_text(r, MNG_OK, "{\"recorded\":1}");
        }
        for (int part = 1; part <= 2; part++) {
            services->phase(services->context, part, 2, part == 1 ? "first half" : "second half");
            for (int epoch = 1; epoch <= 3; epoch++) {
                double values[2] = {1.0 / (part * epoch), 0.25 * epoch};
                services->record(services->context, "epoch", epoch, 2, names, values);
                services->progress(services->context, epoch, 3, "training");
            }
        }
        return set_text(r, MNG_OK, "{\"recorded\":6}");
    }
#endif
    char buf[256];
    snprintf(buf, sizeof buf, "test-probe has no operation '%s'. Operations: echo, fail, nested, progress.", operation);
    return set_text(r, MNG_NOT_FOUND, buf);
}

static void plugin_free_response(void *state, mng_response *r) {
    (void)state;
    owner *o = r->owner;
    if (!o) return;
    for (uint64_t i = 0; i < o->count; i++) {
        free((void *)o->tensors[i].name);
        free((void *)o->tensors[i].shape);
        free(o->tensors[i].data);
    }
    free(o->tensors);
    free(o->text);
    free(o);
    r->owner = NULL;
}

static void plugin_shutdown(void *state) { (void)state; }

static const mng_plugin_descriptor DESCRIPTOR = {
    TEST_ABI_MAJOR, TEST_ABI_MINOR, sizeof(mng_plugin_descriptor), 0, TEST_TOOLCHAIN, NULL,
    plugin_init, plugin_invoke, plugin_free_response, plugin_shutdown,
};

static mng_plugin_descriptor described;

static const mng_plugin_descriptor *describe(void) {
    described = DESCRIPTOR;
    described.metadata_json = PLUGIN_METADATA;
    return &described;
}

#ifndef TEST_NO_ENTRY
const mng_plugin_descriptor *menagerie_plugin_v1(void) { return describe(); }
#else
const mng_plugin_descriptor *some_other_symbol(void) { return describe(); }
#endif

/* For `menagerie call`. */
int32_t test_add_i32(int32_t a, int32_t b) { return a + b; }
float test_scale_f32(float x, int32_t k) { return x * (float)k; }
uint64_t test_strlen(const char *s) { return strlen(s); }
const char *test_greeting(void) { return "hello from C"; }
double test_mix(int8_t a, uint16_t b, double c, float d) { return a + b + c + d; }
