#include <tiffio.h>
/* TIFFGetField/TIFFSetField are C-variadic and not importable: typed wrappers. */
static inline int mng_tiff_get_u32(TIFF *t, uint32_t tag, uint32_t *v) { return TIFFGetField(t, tag, v); }
static inline int mng_tiff_get_u16(TIFF *t, uint32_t tag, uint16_t *v) { return TIFFGetField(t, tag, v); }
static inline int mng_tiff_get_u16_default(TIFF *t, uint32_t tag, uint16_t *v) { return TIFFGetFieldDefaulted(t, tag, v); }
static inline int mng_tiff_set_u32(TIFF *t, uint32_t tag, uint32_t v) { return TIFFSetField(t, tag, v); }
static inline int mng_tiff_set_u16(TIFF *t, uint32_t tag, uint16_t v) { return TIFFSetField(t, tag, (int)v); }
/* TIFFTAG_EXTRASAMPLES takes a count and an array. */
static inline int TIFFSetField_extrasamples(TIFF *t, uint16_t *types) { return TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, types); }
