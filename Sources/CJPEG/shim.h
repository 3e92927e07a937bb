#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>

/* libjpeg reports errors by calling error_exit, which must not return: it longjmps back here.
   Swift cannot setjmp, so decoding a whole file happens in this one C function. */
struct mng_jpeg_error {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int truncated;
};

static void mng_jpeg_error_exit(j_common_ptr info) {
    struct mng_jpeg_error *e = (struct mng_jpeg_error *)info->err;
    (*info->err->format_message)(info, e->message);
    longjmp(e->jump, 1);
}

/* Warnings are not printed; "premature end of data" is remembered: libjpeg pads a truncated file
   with grey and goes on, which would be a silent wrong image. */
static void mng_jpeg_silence(j_common_ptr info, int level) {
    struct mng_jpeg_error *e = (struct mng_jpeg_error *)info->err;
    if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF) e->truncated = 1;
}

/* libjpeg's standard error manager with our exit (longjmp to `e->jump`, which the caller must set
   with setjmp in its own frame) and quiet warnings. */
static inline struct jpeg_error_mgr *mng_jpeg_errors(struct mng_jpeg_error *e) {
    struct jpeg_error_mgr *base = jpeg_std_error(&e->base);
    base->error_exit = mng_jpeg_error_exit;
    base->emit_message = mng_jpeg_silence;
    e->truncated = 0;
    return base;
}

/* Decodes the JPEG file open as `fd` (a regular file; this function closes it) to 8-bit
   interleaved pixels, 1 (grey) or 3 (RGB; CMYK/YCCK are refused) channels. On success returns 0
   and a malloc'ed buffer the caller frees. Before anything is allocated for the image, refuses
   more than `max_pixels` pixels (returns 2 with *width and *height set) and an output buffer of
   more than `max_bytes` (returns 3, also *channels set); libjpeg's own working memory (whole-image
   coefficient buffers of progressive files) is capped at `max_bytes` too. Otherwise returns -1
   with `error` (of `error_size` bytes) holding libjpeg's message. */
static inline int mng_jpeg_decode_fd(int fd, unsigned char **pixels, int *width, int *height, int *channels,
                                     long max_pixels, long max_bytes, char *error, size_t error_size) {
    *pixels = NULL;
    FILE *file = fdopen(fd, "rb");
    if (!file) { close(fd); snprintf(error, error_size, "cannot be opened"); return -1; }
    struct jpeg_decompress_struct info;
    struct mng_jpeg_error err;
    unsigned char *volatile buffer = NULL;
    info.err = mng_jpeg_errors(&err);
    if (setjmp(err.jump)) {
        snprintf(error, error_size, "not a readable JPEG (%s)", err.message);
        jpeg_destroy_decompress(&info);
        fclose(file);
        free(buffer);
        return -1;
    }
    jpeg_create_decompress(&info);
    info.mem->max_memory_to_use = max_bytes;
    jpeg_stdio_src(&info, file);
    jpeg_read_header(&info, TRUE);
    if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
        snprintf(error, error_size, "is a CMYK JPEG; convert it to RGB");
        jpeg_destroy_decompress(&info);
        fclose(file);
        return -1;
    }
    /* JDIMENSION is at most 65500 here: the products fit in a long. */
    long components = info.num_components == 1 ? 1 : 3;
    if (info.image_width == 0 || info.image_height == 0 || (long)info.image_width * (long)info.image_height > max_pixels
        || (long)info.image_width * (long)info.image_height * components > max_bytes) {
        int pixels_refused = info.image_width == 0 || info.image_height == 0 || (long)info.image_width * (long)info.image_height > max_pixels;
        *width = (int)info.image_width;
        *height = (int)info.image_height;
        *channels = (int)components;
        jpeg_destroy_decompress(&info);
        fclose(file);
        return pixels_refused ? 2 : 3;
    }
    info.out_color_space = info.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&info);
    size_t stride = (size_t)info.output_width * (size_t)info.output_components;
    buffer = malloc(stride * info.output_height);
    if (!buffer) {
        snprintf(error, error_size, "is too large to decode (%u×%u)", info.output_width, info.output_height);
        jpeg_destroy_decompress(&info);
        fclose(file);
        return -1;
    }
    while (info.output_scanline < info.output_height) {
        JSAMPROW row = buffer + (size_t)info.output_scanline * stride;
        jpeg_read_scanlines(&info, &row, 1);
    }
    jpeg_finish_decompress(&info);
    if (err.truncated) {
        snprintf(error, error_size, "is truncated (the data ends before the image does)");
        jpeg_destroy_decompress(&info);
        fclose(file);
        free(buffer);
        return -1;
    }
    *width = (int)info.output_width;
    *height = (int)info.output_height;
    *channels = info.output_components;
    *pixels = buffer;
    jpeg_destroy_decompress(&info);
    fclose(file);
    return 0;
}

/* Encodes 8-bit interleaved grey (1) or RGB (3) pixels as a baseline JPEG file at `quality`
   (1…100, libjpeg's scaling of the standard tables). Returns 0, or -1 with `error`. */
static inline int mng_jpeg_encode(const char *path, const unsigned char *pixels, int width, int height, int channels, int quality,
                                  char *error, size_t error_size) {
    FILE *file = fopen(path, "wb");
    if (!file) { snprintf(error, error_size, "cannot be created"); return -1; }
    struct jpeg_compress_struct info;
    struct mng_jpeg_error err;
    info.err = mng_jpeg_errors(&err);
    if (setjmp(err.jump)) {
        snprintf(error, error_size, "cannot be encoded as JPEG (%s)", err.message);
        jpeg_destroy_compress(&info);
        fclose(file);
        return -1;
    }
    jpeg_create_compress(&info);
    jpeg_stdio_dest(&info, file);
    info.image_width = (JDIMENSION)width;
    info.image_height = (JDIMENSION)height;
    info.input_components = channels;
    info.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&info);
    jpeg_set_quality(&info, quality, TRUE);
    jpeg_start_compress(&info, TRUE);
    size_t stride = (size_t)width * (size_t)channels;
    while (info.next_scanline < info.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)info.next_scanline * stride);
        jpeg_write_scanlines(&info, &row, 1);
    }
    jpeg_finish_compress(&info);
    jpeg_destroy_compress(&info);
    if (fclose(file) != 0) { snprintf(error, error_size, "could not be written completely"); return -1; }
    return 0;
}
