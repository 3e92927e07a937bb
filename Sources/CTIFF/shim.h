#include <tiffio.h>
/* TIFFGetField/TIFFSetField are C-variadic and not importable: typed wrappers. */
static inline int mng_tiff_get_u32(TIFF *t, uint32_t tag, uint32_t *v) { return TIFFGetField(t, tag, v); }
static inline int mng_tiff_get_u16(TIFF *t, uint32_t tag, uint16_t *v) { return TIFFGetField(t, tag, v); }
static inline int mng_tiff_get_u16_default(TIFF *t, uint32_t tag, uint16_t *v) { return TIFFGetFieldDefaulted(t, tag, v); }
static inline int mng_tiff_set_u32(TIFF *t, uint32_t tag, uint32_t v) { return TIFFSetField(t, tag, v); }
static inline int mng_tiff_set_u16(TIFF *t, uint32_t tag, uint16_t v) { return TIFFSetField(t, tag, (int)v); }
/* TIFFTAG_EXTRASAMPLES takes a count and an array. */
static inline int TIFFSetField_extrasamples(TIFF *t, uint16_t *types) { return TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, types); }
#include <fcntl.h>
#include <unistd.h>
static inline int mng_tiff_get_u16_pair(TIFF *t, uint32_t tag, uint16_t *a, uint16_t *b) { return TIFFGetFieldDefaulted(t, tag, a, b); }
/* The number of extra samples (alpha and others) per pixel; 0 when the tag is absent. */
static inline int mng_tiff_extra_samples(TIFF *t) {
    uint16_t count = 0;
    uint16_t *types = NULL;
    if (!TIFFGetFieldDefaulted(t, TIFFTAG_EXTRASAMPLES, &count, &types)) return 0;
    return count;
}
/* Opens an already opened regular file for reading, with libtiff's own cap on any single allocation
   (strip and tile buffers sized by the file). On failure the descriptor is closed. */
static inline TIFF *mng_tiff_open_fd(int fd, const char *name, long max_single_alloc) {
    TIFFOpenOptions *options = TIFFOpenOptionsAlloc();
    if (!options) { close(fd); return NULL; }
    TIFFOpenOptionsSetMaxSingleMemAlloc(options, (tmsize_t)max_single_alloc);
    TIFF *tif = TIFFFdOpenExt(fd, name, "rm", options);
    TIFFOpenOptionsFree(options);
    if (!tif && fcntl(fd, F_GETFD) != -1) close(fd);
    return tif;
}
