/*
 * menagerie.h — the Menagerie plugin ABI.
 *
 * This header is the whole contract between the host (`menagerie`) and a plugin (`.so`).
 * A plugin written in C against this header alone is a complete plugin; the Swift SDK
 * (MenagerieKit) is a convenience layer over exactly these declarations.
 *
 * Rules (Docs/ABI.md states them in full):
 *  - The plugin exports one symbol, MENAGERIE_ENTRY_SYMBOL, returning a pointer to a
 *    static mng_plugin_descriptor that lives as long as the process.
 *  - Versioning: same abi_major required; the host's abi_minor must be >= the plugin's.
 *    Every struct begins with (or carries) struct_size and only grows by appending fields.
 *    1.1 appended phase and record to mng_host_services; 1.2 appended emit_text.
 *  - Tensors are row-major, contiguous, named. Inputs are borrowed for the duration of
 *    one invoke call; outputs belong to the plugin until free_response.
 *  - JSON (UTF-8, NUL-terminated) carries metadata, options and results only; bulk data
 *    always travels as tensors.
 */
#ifndef MENAGERIE_H
#define MENAGERIE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MENAGERIE_ABI_MAJOR 1
#define MENAGERIE_ABI_MINOR 2
#define MENAGERIE_ENTRY_SYMBOL "menagerie_plugin_v1"

/* Toolchain string of a plugin that does not use the Swift runtime (C, C++, Rust...). */
#define MENAGERIE_TOOLCHAIN_NONE "none"

/* ---- status codes ---------------------------------------------------------------- */
typedef enum mng_status {
    MNG_OK = 0,
    MNG_ERROR = 1,              /* generic failure; the message says what and where */
    MNG_INVALID_ARGUMENT = 2,   /* bad option, tensor name, dtype or shape */
    MNG_NOT_FOUND = 3,          /* unknown component, operation or file */
    MNG_CANCELLED = 4,          /* the host's cancellation check said stop */
    MNG_UNSUPPORTED = 5         /* a valid request this plugin cannot serve */
} mng_status;

/* ---- tensors --------------------------------------------------------------------- */
typedef enum mng_dtype {
    MNG_F32 = 1,
    MNG_F64 = 2,
    MNG_I32 = 3,
    MNG_I64 = 4,
    MNG_U8 = 5,
    MNG_F16 = 6,
    MNG_BF16 = 7,
    MNG_BOOL = 8               /* one byte per element, 0 or 1 */
} mng_dtype;

/* Size in bytes of one element of `dtype`, or 0 for an unknown dtype. */
static inline size_t mng_dtype_size(int32_t dtype) {
    switch (dtype) {
    case MNG_F32: case MNG_I32: return 4;
    case MNG_F64: case MNG_I64: return 8;
    case MNG_U8: case MNG_BOOL: return 1;
    case MNG_F16: case MNG_BF16: return 2;
    default: return 0;
    }
}

/* A named, row-major, contiguous tensor. nbytes == product(shape) * mng_dtype_size(dtype).
 * A rank-0 tensor (scalar) has shape == NULL and one element. */
typedef struct mng_tensor {
    const char *name;
    int32_t dtype;              /* mng_dtype */
    int32_t rank;
    const int64_t *shape;       /* rank entries */
    void *data;
    uint64_t nbytes;
} mng_tensor;

/* ---- requests and responses -------------------------------------------------------- */
typedef struct mng_request {
    uint32_t struct_size;       /* sizeof(mng_request) of the caller */
    uint32_t reserved;
    const char *options_json;   /* a JSON object; never NULL ("{}" when empty) */
    const mng_tensor *tensors;  /* borrowed for the duration of the call */
    uint64_t tensor_count;
} mng_request;

typedef struct mng_response {
    uint32_t struct_size;       /* set by the CALLER to its sizeof(mng_response) */
    int32_t status;             /* mng_status */
    const char *error;          /* NULL on success; otherwise what failed, where, and what to do */
    const char *result_json;    /* a JSON object or NULL */
    const mng_tensor *tensors;  /* owned by the callee until free_response */
    uint64_t tensor_count;
    void *owner;                /* callee's private bookkeeping for free_response */
} mng_response;

/* ---- host services ------------------------------------------------------------------ */
typedef enum mng_log_level {
    MNG_LOG_TRACE = 0, MNG_LOG_DEBUG = 1, MNG_LOG_INFO = 2,
    MNG_LOG_WARNING = 3, MNG_LOG_ERROR = 4
} mng_log_level;

/* An opaque handle to a component of any loaded plugin, valid until the process exits. */
typedef struct mng_component_handle mng_component_handle;

/* The table the host hands to init. Every function may be called from any thread.
 * All strings returned by the host stay valid until the process exits. */
typedef struct mng_host_services {
    uint32_t struct_size;
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t reserved;
    void *context;              /* pass back as the first argument of every function below */

    void (*log)(void *context, int32_t level, const char *message);
    /* Report progress of the current operation: `done` of `total` units (total <= 0: unknown). */
    void (*progress)(void *context, int64_t done, int64_t total, const char *label);
    /* Non-zero when the user asked to stop (Ctrl-C): return MNG_CANCELLED soon. */
    int32_t (*is_cancelled)(void *context);

    /* Find a component of any plugin by id. Returns NULL and sets *error (host-owned) if none. */
    const mng_component_handle *(*resolve)(void *context, const char *component_id, const char **error);
    /* The metadata JSON of the plugin that provides `component` (host-owned string). */
    const char *(*describe)(void *context, const mng_component_handle *component);
    /* Invoke another component. The caller sets response->struct_size before the call, and
     * calls free_response on it afterwards whatever the status. */
    int32_t (*invoke)(void *context, const mng_component_handle *component, const char *operation,
                      const mng_request *request, mng_response *response);
    void (*free_response)(void *context, mng_response *response);

    const char *scratch_dir;    /* a private writable folder for this run */
    uint64_t seed;              /* the run's seed (--seed) */

    /* ---- ABI 1.1: call these only when struct_size covers them (MNG_HAS_SERVICE); a 1.0 host
     * hands a shorter table. ---- */
    /* The operation is now in part `index` (1-based) of `count` (e.g. net 3 of 5 trained in
     * sequence); `name` says which ("net 3"). Progress reported afterwards belongs to that part. */
    void (*phase)(void *context, int64_t index, int64_t count, const char *name);
    /* One row of metrics at `step` of the current part (e.g. the mean loss of an epoch): `count`
     * names and values. `unit` names the step ("epoch", "step"; NULL: "step"). The CLI prints the
     * row as a line on stderr and writes it to log.csv in --out. */
    void (*record)(void *context, const char *unit, int64_t step, uint64_t count,
                   const char *const *names, const double *values);

    /* ---- ABI 1.2 (MNG_HAS_SERVICE(s, emit_text)) ---- */
    /* Text for the user, streamed as it is produced (e.g. tokens as a model generates them):
     * UTF-8, written as given (no newline added). A plugin never prints to stdout itself; the
     * CLI writes this text to stdout, or to stderr with --json (stdout stays one JSON document). */
    void (*emit_text)(void *context, const char *text);
} mng_host_services;

/* Whether a host-services table `s` carries the function `field` (added in a later minor). */
#define MNG_HAS_SERVICE(s, field) \
    ((s) != NULL && (s)->struct_size >= offsetof(mng_host_services, field) + sizeof((s)->field) && (s)->field != NULL)

/* ---- the plugin descriptor ------------------------------------------------------------ */
typedef struct mng_plugin_descriptor {
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t struct_size;       /* sizeof(mng_plugin_descriptor) of the plugin */
    uint32_t reserved;
    const char *toolchain;      /* "swift-6.3.1" for Swift plugins, MENAGERIE_TOOLCHAIN_NONE otherwise */
    const char *metadata_json;  /* see Docs/ABI.md "Metadata" */

    /* Called once before the first invoke. `services` stays valid until shutdown. */
    int32_t (*init)(const mng_host_services *services, void **state, const char **error);
    /* Run `operation` of `component`. Must always fill `response` (status, error or results). */
    int32_t (*invoke)(void *state, const char *component, const char *operation,
                      const mng_request *request, mng_response *response);
    /* Release everything a previous invoke put in `response`. */
    void (*free_response)(void *state, mng_response *response);
    /* Called at most once, after the last invoke. */
    void (*shutdown)(void *state);
} mng_plugin_descriptor;

typedef const mng_plugin_descriptor *(*mng_entry_fn)(void);

#ifdef __cplusplus
}
#endif
#endif /* MENAGERIE_H */
