#include <png.h>
/* Compound format macros are not imported by Swift: re-export them as constants. */
static const png_uint_32 MNG_PNG_FORMAT_GRAY = PNG_FORMAT_GRAY;
static const png_uint_32 MNG_PNG_FORMAT_RGB = PNG_FORMAT_RGB;
static const png_uint_32 MNG_PNG_FORMAT_RGBA = PNG_FORMAT_RGBA;
static const png_uint_32 MNG_PNG_IMAGE_VERSION = PNG_IMAGE_VERSION;
static inline png_alloc_size_t mng_png_image_size(png_image *image) { return PNG_IMAGE_SIZE(*image); }
static inline int mng_png_image_failed(png_image *image) { return PNG_IMAGE_FAILED(*image); }
