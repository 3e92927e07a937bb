/*
 * A CLIP-like backbone whose text and image embeddings differ in size (8 vs 6): CONCORD must refuse
 * it with an error naming both sizes. Texts → 'embedding' [T, 8] and the preprocessing fields;
 * images ('input') → 'embedding' [N, 6].
 */
#include "menagerie.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char METADATA[] =
    "{\"name\":\"mismatched-clip\",\"version\":\"0.1.0\",\"summary\":\"test backbone\",\"license\":\"MIT\","
    "\"authors\":[\"tests\"],\"paper\":null,\"components\":[{\"id\":\"mismatched-clip\",\"kind\":\"backbone\","
    "\"summary\":\"text 8-d, image 6-d\",\"operations\":[{\"name\":\"embed\",\"summary\":\"embeddings\","
    "\"inputs\":[{\"name\":\"input\",\"dtypes\":[\"f32\"],\"shape\":\"N×3×S×S\",\"summary\":\"images\",\"optional\":true}],"
    "\"outputs\":[{\"name\":\"embedding\",\"dtypes\":[\"f32\"],\"shape\":\"N×E\",\"summary\":\"embeddings\",\"optional\":false}]}],"
    "\"options\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"texts\":{\"type\":\"array\",\"default\":[],\"description\":\"texts\"}}}}]}";

typedef struct owner {
    float *values;
    int64_t shape[2];
    mng_tensor tensor;
    char text[256];
} owner;

static int32_t plugin_init(const mng_host_services *s, void **state, const char **error) {
    (void)s; (void)error; *state = NULL; return MNG_OK;
}

static int32_t plugin_invoke(void *state, const char *component, const char *operation, const mng_request *req, mng_response *r) {
    (void)state; (void)component; (void)operation;
    owner *o = calloc(1, sizeof *o);
    r->owner = o;
    r->error = NULL;
    int64_t rows = 1, width = 8;
    const char *texts = req->options_json ? strstr(req->options_json, "\"texts\"") : NULL;
    if (texts && strstr(texts, "[]") != texts + 9) {
        rows = 0;
        for (const char *p = strchr(texts, '['); p && *p && *p != ']'; p++) if (*p == '"') rows++;
        rows /= 2;
        snprintf(o->text, sizeof o->text, "{\"image_size\":32,\"mean\":[0.5,0.5,0.5],\"std\":[0.5,0.5,0.5]}");
    } else {
        for (uint64_t i = 0; i < req->tensor_count; i++)
            if (strcmp(req->tensors[i].name, "input") == 0) rows = req->tensors[i].shape[0];
        width = 6;
        snprintf(o->text, sizeof o->text, "{}");
    }
    o->values = calloc((size_t)(rows * width), sizeof(float));
    for (int64_t i = 0; i < rows * width; i++) o->values[i] = (float)(1 + i % 5);
    o->shape[0] = rows;
    o->shape[1] = width;
    o->tensor = (mng_tensor){"embedding", MNG_F32, 2, o->shape, o->values, (uint64_t)(rows * width) * sizeof(float)};
    r->status = MNG_OK;
    r->result_json = o->text;
    r->tensors = &o->tensor;
    r->tensor_count = 1;
    return MNG_OK;
}

static void plugin_free_response(void *state, mng_response *r) {
    (void)state;
    owner *o = r->owner;
    if (!o) return;
    free(o->values);
    free(o);
    r->owner = NULL;
}

static void plugin_shutdown(void *state) { (void)state; }

static const mng_plugin_descriptor DESCRIPTOR = {
    MENAGERIE_ABI_MAJOR, MENAGERIE_ABI_MINOR, sizeof(mng_plugin_descriptor), 0, MENAGERIE_TOOLCHAIN_NONE, METADATA,
    plugin_init, plugin_invoke, plugin_free_response, plugin_shutdown,
};

const mng_plugin_descriptor *menagerie_plugin_v1(void) { return &DESCRIPTOR; }
