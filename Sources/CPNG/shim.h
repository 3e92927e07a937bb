#include <png.h>
/* Compound format macros are not imported by Swift: re-export them as constants. */
static const png_uint_32 MNG_PNG_FORMAT_GRAY = PNG_FORMAT_GRAY;
static const png_uint_32 MNG_PNG_FORMAT_RGB = PNG_FORMAT_RGB;
static const png_uint_32 MNG_PNG_FORMAT_RGBA = PNG_FORMAT_RGBA;
static const png_uint_32 MNG_PNG_IMAGE_VERSION = PNG_IMAGE_VERSION;
static inline png_alloc_size_t mng_png_image_size(png_image *image) { return PNG_IMAGE_SIZE(*image); }
static inline int mng_png_image_failed(png_image *image) { return PNG_IMAGE_FAILED(*image); }

/* ---- 16-bit samples through libpng's full API ----------------------------------------------
 * The simplified API treats 16-bit data as linear light (premultiplying alpha), so samples are
 * read and written here instead. libpng reports errors by longjmp: the setjmp lives in these C
 * frames and never crosses a Swift one; the message is copied out. */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { char message[256]; } mng_png_failure;

static void mng_png_on_error(png_structp png, png_const_charp msg) {
    mng_png_failure *f = (mng_png_failure *)png_get_error_ptr(png);
    snprintf(f->message, sizeof f->message, "%s", msg);
    png_longjmp(png, 1);
}
static void mng_png_on_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

/* Reads every sample as 16-bit (8-bit files are widened by ×257, palettes and tRNS expanded,
 * gray+alpha turned into RGBA) from `fd`, an open regular file this function closes. On success
 * returns 0 with *out malloc'ed (free with free()), laid out row-major with *channels (1, 3 or 4)
 * interleaved; *bit_depth is the file's own depth. Before allocating, refuses images over
 * max_pixels (returns 2, *width and *height set) and buffers over max_bytes (returns 3, *width,
 * *height and *channels set); other failures return 1 with `message`. */
static inline int mng_png_read16_fd(int fd, long max_pixels, long max_bytes, uint32_t *width, uint32_t *height, int *channels,
                                    int *bit_depth, uint16_t **out, char *message, size_t message_len) {
    mng_png_failure failure = { "" };
    FILE *file = fdopen(fd, "rb");
    if (!file) { close(fd); snprintf(message, message_len, "cannot open"); return 1; }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, mng_png_on_error, mng_png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint16_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (!png || !info) { png_destroy_read_struct(&png, &info, NULL); fclose(file); snprintf(message, message_len, "out of memory"); return 1; }
    if (setjmp(png_jmpbuf(png))) {
        free(pixels); free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        fclose(file);
        snprintf(message, message_len, "%s", failure.message[0] ? failure.message : "corrupt PNG data");
        return 1;
    }
    png_init_io(png, file);
    png_read_info(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), color = png_get_color_type(png, info);
    if (w == 0 || h == 0 || (long)w * (long)h > max_pixels) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(file);
        *width = w; *height = h;
        return 2;
    }
    png_set_expand(png);                       /* palette → RGB, gray < 8 bits → 8, tRNS → alpha */
    png_set_expand_16(png);                    /* 8 → 16 bits */
    if (!(color & PNG_COLOR_MASK_COLOR) && (color & PNG_COLOR_MASK_ALPHA || png_get_valid(png, info, PNG_INFO_tRNS)))
        png_set_gray_to_rgb(png);              /* gray + alpha → RGBA */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    png_set_swap(png);
#endif
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    /* w, h < 2^31 (libpng's limit) and ch ≤ 4: the products below fit in 64 bits. */
    size_t bytes = (size_t)w * (size_t)h * (size_t)ch * 2;
    int bad_layout = ch < 1 || ch > 4 || png_get_rowbytes(png, info) != (size_t)w * (size_t)ch * 2;
    if (bad_layout || max_bytes < 0 || bytes > (size_t)max_bytes) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(file);
        *width = w; *height = h; *channels = ch;
        if (bad_layout) {
            snprintf(message, message_len, "unexpected row layout (%d channels)", ch);
            return 1;
        }
        return 3;
    }
    pixels = (uint16_t *)malloc(bytes + 1);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * h);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (uint32_t y = 0; y < h; y++) rows[y] = (png_bytep)(pixels + (size_t)y * w * ch);
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(file);
    *width = w; *height = h; *channels = ch; *bit_depth = depth; *out = pixels;
    return 0;
}

typedef struct { unsigned char *bytes; size_t count, capacity; } mng_png_buffer;

static void mng_png_append(png_structp png, png_bytep data, png_size_t length) {
    mng_png_buffer *b = (mng_png_buffer *)png_get_io_ptr(png);
    if (b->count + length > b->capacity) {
        size_t cap = b->capacity ? b->capacity : 4096;
        while (cap < b->count + length) cap *= 2;
        unsigned char *grown = (unsigned char *)realloc(b->bytes, cap);
        if (!grown) png_error(png, "out of memory");
        b->bytes = grown; b->capacity = cap;
    }
    memcpy(b->bytes + b->count, data, length);
    b->count += length;
}
static void mng_png_flush(png_structp png) { (void)png; }

/* Encodes 16-bit samples (host order, channels 1, 3 or 4) as a 16-bit PNG in memory. On success
 * returns 0 with *out malloc'ed (free with free()) holding *count bytes. */
static inline int mng_png_write16(const uint16_t *samples, uint32_t width, uint32_t height, int channels,
                                  unsigned char **out, size_t *count, char *message, size_t message_len) {
    mng_png_failure failure = { "" };
    mng_png_buffer buffer = { NULL, 0, 0 };
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &failure, mng_png_on_error, mng_png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) { snprintf(message, message_len, "out of memory"); return 1; }
    if (setjmp(png_jmpbuf(png))) {
        free(buffer.bytes);
        png_destroy_write_struct(&png, &info);
        snprintf(message, message_len, "%s", failure.message[0] ? failure.message : "cannot encode");
        return 1;
    }
    int color = channels == 1 ? PNG_COLOR_TYPE_GRAY : channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
    png_set_write_fn(png, &buffer, mng_png_append, mng_png_flush);
    png_set_IHDR(png, info, width, height, 16, color, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    png_set_swap(png);
#endif
    for (uint32_t y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(samples + (size_t)y * width * channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = buffer.bytes; *count = buffer.count;
    return 0;
}
