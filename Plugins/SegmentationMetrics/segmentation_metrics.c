/*
 * segmentation-metrics — a Menagerie plugin written in C against menagerie.h alone.
 *
 * Per-class IoU, Dice, their means and pixel accuracy on integer label masks, with an ignore label.
 * For class k with TP_k, FP_k, FN_k counted over the pixels whose target is not the ignore label:
 *   IoU_k  = TP_k / (TP_k + FP_k + FN_k)
 *   Dice_k = 2 TP_k / (2 TP_k + FP_k + FN_k)
 * A class absent from both prediction and target has no score (null) and is left out of the means
 * (mIoU, mean Dice), as mmsegmentation's nanmean does.
 */
#include "menagerie.h"
#include "segmentation_metrics.h"

#include <png.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLUGIN_NAME "segmentation-metrics"
#define COMPONENT_ID "segmentation-metrics"

static const char METADATA[] =
    "{\"name\":\"" PLUGIN_NAME "\",\"version\":\"1.0.0\","
    "\"summary\":\"Per-class IoU, mIoU, Dice and pixel accuracy of integer label masks (written in C)\","
    "\"license\":\"MIT\",\"authors\":[\"Menagerie contributors\"],\"paper\":null,"
    "\"components\":[{\"id\":\"" COMPONENT_ID "\",\"kind\":\"metric\",\"tour\":true,"
    "\"summary\":\"IoU, mIoU, Dice and pixel accuracy of label masks, with an ignore label\","
    "\"operations\":[{\"name\":\"evaluate\",\"summary\":\"compare a predicted label mask with the target\","
    "\"inputs\":["
    "{\"name\":\"prediction\",\"dtypes\":[\"u8\",\"i32\",\"i64\"],\"shape\":\"any (e.g. H×W or N×H×W)\",\"summary\":\"predicted class per pixel\",\"optional\":false},"
    "{\"name\":\"target\",\"dtypes\":[\"u8\",\"i32\",\"i64\"],\"shape\":\"same as prediction\",\"summary\":\"true class per pixel; ignore_label pixels are skipped\",\"optional\":false}],"
    "\"outputs\":["
    "{\"name\":\"confusion\",\"dtypes\":[\"i64\"],\"shape\":\"C×C\",\"summary\":\"rows: target class, columns: predicted class\",\"optional\":false},"
    "{\"name\":\"iou\",\"dtypes\":[\"f64\"],\"shape\":\"C\",\"summary\":\"per-class IoU, NaN for a class absent from both masks\",\"optional\":false}]}],"
    "\"options\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"classes\":{\"type\":\"integer\",\"default\":0,\"minimum\":0,\"maximum\":65536,\"description\":\"number of classes; 0 = largest label seen + 1\"},"
    "\"ignore_label\":{\"type\":\"integer\",\"default\":255,\"description\":\"target value whose pixels are not scored (-1: none)\"}}}}]}";

typedef struct state {
    const mng_host_services *services;
} state;

typedef struct response_owner {
    char *result;
    char *error;
    mng_tensor tensors[2];
    int64_t confusion_shape[2];
    int64_t iou_shape[1];
    int64_t *confusion;
    double *iou;
} response_owner;

static void plugin_free_response(void *st, mng_response *response);

/* ---- small helpers ---------------------------------------------------------------------- */

/* Finds an integer member "key" in a flat JSON object. Returns 1 and sets *out when present. */
static int json_int(const char *json, const char *key, long long *out) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(json, pattern);
    if (!p) return 0;
    p += strlen(pattern);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == ':') p++;
    char *end = NULL;
    errno = 0;
    double v = strtod(p, &end);
    /* NaN, ±inf, fractions and values beyond ±2^53 are refused before the conversion (which would
     * be undefined behaviour out of range). */
    if (end == p || errno != 0 || !isfinite(v) || v != floor(v) || fabs(v) > 9007199254740992.0) return -1;
    *out = (long long)v;
    return 1;
}

static int64_t element(const mng_tensor *t, uint64_t i) {
    switch (t->dtype) {
    case MNG_U8: return ((const uint8_t *)t->data)[i];
    case MNG_I32: return ((const int32_t *)t->data)[i];
    default: return ((const int64_t *)t->data)[i];
    }
}

/* The number of elements, or UINT64_MAX when a dimension is negative or the product overflows. */
static uint64_t element_count(const mng_tensor *t) {
    uint64_t n = 1;
    for (int32_t d = 0; d < t->rank; d++) {
        if (t->shape[d] < 0) return UINT64_MAX;
        uint64_t dim = (uint64_t)t->shape[d];
        if (dim != 0 && n > UINT64_MAX / dim) return UINT64_MAX;
        n *= dim;
    }
    return n;
}

/* The largest number of classes (a confusion matrix of at most MAX_CONFUSION_BYTES). */
#define MAX_CLASSES 65536LL
#define MAX_CONFUSION_BYTES (1ULL << 30)

static int32_t fail(mng_response *r, int32_t status, const char *fmt, ...) {
    char buf[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    response_owner *o = calloc(1, sizeof *o);
    char *text = o ? strdup(buf) : NULL;
    r->status = status;
    if (!o || !text) {
        /* Out of memory even for the message: a static text, nothing to free. */
        free(o);
        r->error = "out of memory";
        r->owner = NULL;
        return status;
    }
    o->error = text;
    r->error = o->error;
    r->owner = o;
    return status;
}

static const mng_tensor *find(const mng_request *req, const char *name) {
    for (uint64_t i = 0; i < req->tensor_count; i++)
        if (req->tensors[i].name && strcmp(req->tensors[i].name, name) == 0) return &req->tensors[i];
    return NULL;
}

/* Appends a JSON number or null. */
static size_t put_number(char *buf, size_t at, size_t cap, double v) {
    if (isnan(v)) return at + (size_t)snprintf(buf + at, cap - at, "null");
    return at + (size_t)snprintf(buf + at, cap - at, "%.17g", v);
}

/* ---- the metric ------------------------------------------------------------------------ */

/* Counts the confusion matrix (C×C, row = target) and fills per-class IoU and Dice. */
static void scores_from_confusion(const int64_t *confusion, int64_t classes, double *iou, double *dice,
                                  double *miou, double *mdice, double *pixel_accuracy, int64_t *pixels) {
    double sum_iou = 0, sum_dice = 0, correct = 0;
    int64_t valid = 0, total = 0;
    for (int64_t k = 0; k < classes; k++) {
        int64_t tp = confusion[k * classes + k], fp = 0, fn = 0;
        for (int64_t j = 0; j < classes; j++) {
            if (j == k) continue;
            fn += confusion[k * classes + j];
            fp += confusion[j * classes + k];
        }
        total += tp + fn;
        correct += (double)tp;
        if (tp + fp + fn == 0) {
            iou[k] = NAN;
            dice[k] = NAN;
            continue;
        }
        iou[k] = (double)tp / (double)(tp + fp + fn);
        dice[k] = 2.0 * (double)tp / (double)(2 * tp + fp + fn);
        sum_iou += iou[k];
        sum_dice += dice[k];
        valid++;
    }
    *miou = valid ? sum_iou / (double)valid : NAN;
    *mdice = valid ? sum_dice / (double)valid : NAN;
    *pixel_accuracy = total ? correct / (double)total : NAN;
    *pixels = total;
}

static int32_t evaluate(state *s, const mng_request *req, mng_response *r) {
    (void)s;
    const mng_tensor *pred = find(req, "prediction"), *target = find(req, "target");
    if (!pred) return fail(r, MNG_INVALID_ARGUMENT, "'%s' needs an input tensor 'prediction' (pass --input prediction=FILE.npy or a PNG label mask)", COMPONENT_ID);
    if (!target) return fail(r, MNG_INVALID_ARGUMENT, "'%s' needs an input tensor 'target' (pass --input target=FILE.npy or a PNG label mask)", COMPONENT_ID);
    const mng_tensor *both[2] = {pred, target};
    for (int i = 0; i < 2; i++) {
        int32_t dt = both[i]->dtype;
        if (dt != MNG_U8 && dt != MNG_I32 && dt != MNG_I64)
            return fail(r, MNG_INVALID_ARGUMENT, "input '%s' must be an integer label mask (u8, i32 or i64), got dtype code %d",
                        both[i]->name, (int)dt);
    }
    if (pred->rank != target->rank) return fail(r, MNG_INVALID_ARGUMENT, "'prediction' (rank %d) and 'target' (rank %d) must have the same shape", (int)pred->rank, (int)target->rank);
    for (int32_t d = 0; d < pred->rank; d++)
        if (pred->shape[d] != target->shape[d])
            return fail(r, MNG_INVALID_ARGUMENT, "'prediction' and 'target' must have the same shape; dimension %d is %lld vs %lld",
                        (int)d, (long long)pred->shape[d], (long long)target->shape[d]);

    const char *opts = req->options_json ? req->options_json : "{}";
    long long classes = 0, ignore = 255;
    if (json_int(opts, "classes", &classes) < 0 || classes < 0 || classes > MAX_CLASSES)
        return fail(r, MNG_INVALID_ARGUMENT, "option 'classes' of '" COMPONENT_ID "' must be an integer in 0…%lld", MAX_CLASSES);
    if (json_int(opts, "ignore_label", &ignore) < 0)
        return fail(r, MNG_INVALID_ARGUMENT, "option 'ignore_label' of '" COMPONENT_ID "' must be an integer in -2^53…2^53");

    uint64_t n = element_count(pred);
    uint64_t data_bytes = pred->dtype == MNG_U8 ? 1 : (pred->dtype == MNG_I32 ? 4 : 8);
    if (n == UINT64_MAX || (n > 0 && (!pred->data || !target->data)) || (n > 0 && n > UINT64_MAX / data_bytes))
        return fail(r, MNG_INVALID_ARGUMENT, "'prediction' has an invalid shape (negative or overflowing dimensions)");
    if (classes == 0) {
        int64_t max = -1;
        for (uint64_t i = 0; i < n; i++) {
            int64_t t = element(target, i), p = element(pred, i);
            if (t == ignore) continue;
            if (t > max) max = t;
            if (p > max) max = p;
        }
        classes = max + 1;
        if (classes <= 0) return fail(r, MNG_INVALID_ARGUMENT, "every target pixel has the ignore label %lld: nothing to score (%llu pixels)", ignore, (unsigned long long)n);
    }
    /* classes ≤ 2^16, so classes² × 8 ≤ 2^35 cannot overflow; the matrix is capped at 1 GiB. */
    if (classes > MAX_CLASSES || (uint64_t)classes * (uint64_t)classes * sizeof(int64_t) > MAX_CONFUSION_BYTES)
        return fail(r, MNG_INVALID_ARGUMENT,
                    "classes = %lld is too many: its %lld×%lld confusion matrix would need %.1f GiB, more than the "
                    "limit of 1 GiB (at most %lld classes); set the option 'classes' or check the label values",
                    classes, classes, classes, (double)classes * (double)classes * 8.0 / 1073741824.0, 11585LL);

    response_owner *o = calloc(1, sizeof *o);
    if (!o) return fail(r, MNG_ERROR, "'" COMPONENT_ID "': out of memory");
    o->confusion = calloc((size_t)(classes * classes), sizeof(int64_t));
    o->iou = calloc((size_t)classes, sizeof(double));
    double *dice = calloc((size_t)classes, sizeof(double));
    if (!o->confusion || !o->iou || !dice) {
        free(o->confusion); free(o->iou); free(dice); free(o);
        return fail(r, MNG_ERROR, "out of memory for %lld classes (a %lld×%lld confusion matrix)", classes, classes, classes);
    }
    for (uint64_t i = 0; i < n; i++) {
        int64_t t = element(target, i), p = element(pred, i);
        if (t == ignore) continue;
        if (t < 0 || t >= classes || p < 0 || p >= classes) {
            free(o->confusion); free(o->iou); free(dice); free(o);
            return fail(r, MNG_INVALID_ARGUMENT,
                        "label out of range at flat index %llu (target %lld, prediction %lld): values must lie in 0..%lld (or be the ignore label %lld in the target); set 'classes' or 'ignore_label'",
                        (unsigned long long)i, (long long)t, (long long)p, classes - 1, ignore);
        }
        o->confusion[t * classes + p]++;
    }
    if (s && s->services && s->services->progress) s->services->progress(s->services->context, 1, 1, "scored");

    double miou, mdice, pa;
    int64_t pixels;
    scores_from_confusion(o->confusion, classes, o->iou, dice, &miou, &mdice, &pa, &pixels);

    size_t cap = 256 + (size_t)classes * 64;
    char *json = malloc(cap);
    if (!json) {
        free(dice);
        r->owner = o;
        plugin_free_response(NULL, r);
        return fail(r, MNG_ERROR, "'" COMPONENT_ID "': out of memory for the result of %lld classes", classes);
    }
    size_t at = (size_t)snprintf(json, cap, "{\"classes\":%lld,\"pixels\":%lld,\"miou\":", classes, (long long)pixels);
    at = put_number(json, at, cap, miou);
    at += (size_t)snprintf(json + at, cap - at, ",\"mean_dice\":");
    at = put_number(json, at, cap, mdice);
    at += (size_t)snprintf(json + at, cap - at, ",\"pixel_accuracy\":");
    at = put_number(json, at, cap, pa);
    at += (size_t)snprintf(json + at, cap - at, ",\"iou\":[");
    for (int64_t k = 0; k < classes; k++) {
        if (k) json[at++] = ',';
        at = put_number(json, at, cap, o->iou[k]);
    }
    at += (size_t)snprintf(json + at, cap - at, "],\"dice\":[");
    for (int64_t k = 0; k < classes; k++) {
        if (k) json[at++] = ',';
        at = put_number(json, at, cap, dice[k]);
    }
    snprintf(json + at, cap - at, "]}");
    free(dice);

    o->result = json;
    o->confusion_shape[0] = o->confusion_shape[1] = classes;
    o->iou_shape[0] = classes;
    o->tensors[0] = (mng_tensor){"confusion", MNG_I64, 2, o->confusion_shape, o->confusion, (uint64_t)(classes * classes) * 8};
    o->tensors[1] = (mng_tensor){"iou", MNG_F64, 1, o->iou_shape, o->iou, (uint64_t)classes * 8};
    r->status = MNG_OK;
    r->error = NULL;
    r->result_json = o->result;
    r->tensors = o->tensors;
    r->tensor_count = 2;
    r->owner = o;
    return MNG_OK;
}

/* Replaces a successful response by the error of a file that could not be written. */
static int32_t tour_failed(mng_response *r, response_owner *o, const char *path) {
    int saved = errno;
    r->owner = o;
    plugin_free_response(NULL, r);
    return fail(r, MNG_ERROR, "cannot write %s (%s): check that the output folder is writable", path, strerror(saved));
}

/* Colours of the tour's images: background, classes 1 and 2, ignored pixels. */
static void colour(uint8_t label, uint8_t rgb[3]) {
    static const uint8_t palette[3][3] = {{60, 60, 60}, {52, 101, 164}, {245, 121, 0}};
    if (label == 255) { rgb[0] = rgb[1] = rgb[2] = 255; return; }
    memcpy(rgb, palette[label % 3], 3);
}

/* Writes an RGB image with libpng's simplified API; 0 on success. */
static int write_png(const char *path, const uint8_t *rgb, int width, int height) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)width;
    image.height = (png_uint_32)height;
    image.format = PNG_FORMAT_RGB;
    int ok = png_image_write_to_file(&image, path, 0, rgb, width * 3, NULL);
    png_image_free(&image);
    return ok ? 0 : -1;
}

/* The tour: a disc, a ring and background on 96×96, the prediction shifted by 4 pixels and the
 * ring partly missed; a border of ignore-label pixels. Writes the target, the prediction and an
 * error map (green: right, red: wrong, white: ignored) as PNG, and the per-class table as CSV. */
static int32_t tour(state *s, mng_response *r) {
    enum { W = 96, H = 96 };
    static uint8_t target[H][W], pred[H][W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double dt = hypot(x - 48.0, y - 48.0), dp = hypot(x - 52.0, y - 48.0);
            target[y][x] = dt < 18 ? 1 : (dt < 32 ? 2 : 0);
            pred[y][x] = dp < 18 ? 1 : (dp < 32 && y > 30 ? 2 : 0);
            if (x < 2 || y < 2 || x >= W - 2 || y >= H - 2) target[y][x] = 255;
        }
    int64_t shape[2] = {H, W};
    mng_tensor tensors[2] = {{"prediction", MNG_U8, 2, shape, pred, W * H}, {"target", MNG_U8, 2, shape, target, W * H}};
    mng_request req = {sizeof(mng_request), 0, "{\"classes\":3,\"ignore_label\":255}", tensors, 2};
    int32_t status = evaluate(s, &req, r);
    if (status != MNG_OK) return status;

    response_owner *o = r->owner;
    const char *dir = (s && s->services && s->services->scratch_dir) ? s->services->scratch_dir : "/tmp";
    char path[4096];
    static uint8_t rgb[3][H * W * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *t = &rgb[0][(y * W + x) * 3], *p = &rgb[1][(y * W + x) * 3], *e = &rgb[2][(y * W + x) * 3];
            colour(target[y][x], t);
            colour(pred[y][x], p);
            if (target[y][x] == 255) { e[0] = e[1] = e[2] = 255; }
            else if (target[y][x] == pred[y][x]) { e[0] = 78; e[1] = 154; e[2] = 6; }
            else { e[0] = 204; e[1] = 0; e[2] = 0; }
        }
    const char *names[3] = {"target.png", "prediction.png", "errors.png"};
    for (int m = 0; m < 3; m++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[m]);
        if (write_png(path, rgb[m], W, H) != 0) return tour_failed(r, o, path);
    }
    snprintf(path, sizeof path, "%s/segmentation_metrics.csv", dir);
    FILE *f = fopen(path, "w");
    if (!f) return tour_failed(r, o, path);
    fprintf(f, "class,iou\n");
    for (int k = 0; k < 3; k++) fprintf(f, "%d,%.6f\n", k, o->iou[k]);
    fclose(f);
    /* Name the artifacts in the result: replace the closing brace. */
    size_t len = strlen(o->result);
    char *with = malloc(len + 128);
    if (!with) {
        r->owner = o;
        plugin_free_response(NULL, r);
        return fail(r, MNG_ERROR, "'" COMPONENT_ID "': out of memory");
    }
    memcpy(with, o->result, len - 1);
    snprintf(with + len - 1, 128, ",\"artifacts\":[\"segmentation_metrics.csv\",\"target.png\",\"prediction.png\",\"errors.png\"]}");
    free(o->result);
    o->result = with;
    r->result_json = with;
    return MNG_OK;
}

/* ---- the ABI ----------------------------------------------------------------------------- */

static int32_t plugin_init(const mng_host_services *services, void **out, const char **error) {
    state *s = calloc(1, sizeof *s);
    if (!s) {
        if (error) *error = "out of memory";
        return MNG_ERROR;
    }
    s->services = services;
    *out = s;
    return MNG_OK;
}

static int32_t plugin_invoke(void *st, const char *component, const char *operation,
                             const mng_request *request, mng_response *response) {
    state *s = st;
    memset(&response->status, 0, sizeof *response - offsetof(mng_response, status));
    if (!component || strcmp(component, COMPONENT_ID) != 0)
        return fail(response, MNG_NOT_FOUND, "this plugin has no component '%s'", component ? component : "");
    if (!operation || !*operation || strcmp(operation, "evaluate") == 0) return evaluate(s, request, response);
    if (strcmp(operation, "tour") == 0) return tour(s, response);
    return fail(response, MNG_NOT_FOUND, "'" COMPONENT_ID "' has no operation '%s'. Operations: evaluate, tour.", operation);
}

static void plugin_free_response(void *st, mng_response *response) {
    (void)st;
    response_owner *o = response->owner;
    if (!o) return;
    free(o->result);
    free(o->error);
    free(o->confusion);
    free(o->iou);
    free(o);
    response->owner = NULL;
}

static void plugin_shutdown(void *st) { free(st); }

static const mng_plugin_descriptor DESCRIPTOR = {
    MENAGERIE_ABI_MAJOR, MENAGERIE_ABI_MINOR, sizeof(mng_plugin_descriptor), 0,
    MENAGERIE_TOOLCHAIN_NONE, METADATA,
    plugin_init, plugin_invoke, plugin_free_response, plugin_shutdown,
};

const mng_plugin_descriptor *menagerie_plugin_v1(void) { return &DESCRIPTOR; }

/* Plain C helpers, exported for `menagerie call` and for other C code. */
double segmentation_metrics_iou(int64_t tp, int64_t fp, int64_t fn) {
    return tp + fp + fn == 0 ? NAN : (double)tp / (double)(tp + fp + fn);
}

double segmentation_metrics_dice(int64_t tp, int64_t fp, int64_t fn) {
    return tp + fp + fn == 0 ? NAN : 2.0 * (double)tp / (double)(2 * tp + fp + fn);
}
