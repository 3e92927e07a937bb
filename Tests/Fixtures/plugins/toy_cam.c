/*
 * A third-party explainer in C for finer-cam's tests (compiled by FinerCAMTests with `cc -shared`):
 * component "toy-cam", operation "explain". Its "classifier" is the identity on channel means:
 * images f32 [N, K, H, W] → logits y_ik = mean over (h, w) of channel k, so ∂y_ik/∂x_ikhw = 1/(H·W).
 * Its map is the gradient-times-input of the score: maps[i] = Σ_k w_ik · x_ik (no ReLU, no scaling),
 * with w_i = the input "target_weights" row i when given (a linear target, S_i = Σ_k w_ik·y_ik),
 * else the one-hot of image i's top class. Outputs: "maps" f32 [N, H, W], "logits" f32 [N, K].
 * It declares no "scorer" option, so finer-cam must use the linearised target with it.
 */
#include "menagerie.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char METADATA[] =
    "{\"name\":\"toy-cam\",\"version\":\"1.0.0\",\"summary\":\"a trivial CAM for finer-cam's tests\",\"license\":\"MIT\","
    "\"authors\":[\"tests\"],"
    "\"components\":[{\"id\":\"toy-cam\",\"kind\":\"explainer\",\"summary\":\"maps = sum_k w_k x_k on channel-mean logits\","
    "\"operations\":[{\"name\":\"explain\",\"summary\":\"maps and logits\","
    "\"inputs\":[{\"name\":\"images\",\"dtypes\":[\"f32\"],\"shape\":\"N×K×H×W\",\"summary\":\"images\",\"optional\":false},"
    "{\"name\":\"target_weights\",\"dtypes\":[\"f32\"],\"shape\":\"N×K\",\"summary\":\"linear target\",\"optional\":true}],"
    "\"outputs\":[{\"name\":\"maps\",\"dtypes\":[\"f32\"],\"shape\":\"N×H×W\",\"summary\":\"maps\",\"optional\":false},"
    "{\"name\":\"logits\",\"dtypes\":[\"f32\"],\"shape\":\"N×K\",\"summary\":\"logits\",\"optional\":false}]}],"
    "\"options\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{}}}]}";

typedef struct owner {
    char *text;
    mng_tensor tensors[2];
    int64_t shapes[2][3];
    float *data[2];
} owner;

static int32_t fail(mng_response *r, int32_t status, const char *text) {
    owner *o = calloc(1, sizeof *o);
    o->text = strdup(text);
    r->status = status;
    r->error = o->text;
    r->owner = o;
    return status;
}

static int32_t plugin_init(const mng_host_services *s, void **state, const char **error) {
    (void)error;
    *state = (void *)s;
    return MNG_OK;
}

static int32_t plugin_invoke(void *state, const char *component, const char *operation, const mng_request *req, mng_response *r) {
    (void)state;
    (void)component;
    if (strcmp(operation, "explain") != 0 && *operation != 0) return fail(r, MNG_NOT_FOUND, "toy-cam has no such operation");
    const mng_tensor *images = NULL, *weights = NULL;
    for (uint64_t i = 0; i < req->tensor_count; i++) {
        if (strcmp(req->tensors[i].name, "images") == 0) images = &req->tensors[i];
        if (strcmp(req->tensors[i].name, "target_weights") == 0) weights = &req->tensors[i];
    }
    if (!images || images->dtype != MNG_F32 || images->rank != 4) return fail(r, MNG_INVALID_ARGUMENT, "toy-cam needs images f32 [N, K, H, W]");
    int64_t n = images->shape[0], k = images->shape[1], h = images->shape[2], w = images->shape[3], plane = h * w;
    if (weights && (weights->dtype != MNG_F32 || weights->rank != 2 || weights->shape[0] != n || weights->shape[1] != k))
        return fail(r, MNG_INVALID_ARGUMENT, "toy-cam: target_weights must be f32 [N, K]");
    const float *x = images->data;
    owner *o = calloc(1, sizeof *o);
    float *logits = calloc((size_t)(n * k), sizeof(float)), *maps = calloc((size_t)(n * plane), sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        for (int64_t c = 0; c < k; c++) {
            double s = 0;
            for (int64_t p = 0; p < plane; p++) s += x[(i * k + c) * plane + p];
            logits[i * k + c] = (float)(s / (double)plane);
        }
        int64_t top = 0;
        for (int64_t c = 1; c < k; c++)
            if (logits[i * k + c] > logits[i * k + top]) top = c;
        for (int64_t c = 0; c < k; c++) {
            float wc = weights ? ((const float *)weights->data)[i * k + c] : (c == top ? 1.0f : 0.0f);
            for (int64_t p = 0; p < plane; p++) maps[i * plane + p] += wc * x[(i * k + c) * plane + p];
        }
    }
    o->text = strdup("{\"method\":\"toy-cam\"}");
    o->data[0] = maps;
    o->data[1] = logits;
    o->shapes[0][0] = n, o->shapes[0][1] = h, o->shapes[0][2] = w;
    o->shapes[1][0] = n, o->shapes[1][1] = k;
    o->tensors[0] = (mng_tensor){"maps", MNG_F32, 3, o->shapes[0], maps, (uint64_t)(n * plane) * 4};
    o->tensors[1] = (mng_tensor){"logits", MNG_F32, 2, o->shapes[1], logits, (uint64_t)(n * k) * 4};
    r->status = MNG_OK;
    r->result_json = o->text;
    r->tensors = o->tensors;
    r->tensor_count = 2;
    r->owner = o;
    return MNG_OK;
}

static void plugin_free_response(void *state, mng_response *r) {
    (void)state;
    owner *o = r->owner;
    if (!o) return;
    free(o->data[0]);
    free(o->data[1]);
    free(o->text);
    free(o);
    r->owner = NULL;
}

static void plugin_shutdown(void *state) { (void)state; }

static mng_plugin_descriptor described;

const mng_plugin_descriptor *menagerie_plugin_v1(void) {
    described = (mng_plugin_descriptor){
        MENAGERIE_ABI_MAJOR, MENAGERIE_ABI_MINOR, sizeof(mng_plugin_descriptor), 0, MENAGERIE_TOOLCHAIN_NONE, METADATA,
        plugin_init, plugin_invoke, plugin_free_response, plugin_shutdown,
    };
    return &described;
}
