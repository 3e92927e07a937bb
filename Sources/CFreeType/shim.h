/* FreeType (glyph rasterization) and fontconfig (finding a font file by family name), for the
 * figures of Sources/Imaging. The helpers keep C macros and linked lists out of Swift. */
#include <ft2build.h>
#include FT_FREETYPE_H
#include FT_ADVANCES_H
#include <fontconfig/fontconfig.h>
#include <stdio.h>
#include <string.h>

static const FT_Int32 MNG_FT_LOAD_RENDER = FT_LOAD_RENDER | FT_LOAD_TARGET_LIGHT;
static const FT_Int32 MNG_FT_LOAD_NO_SCALE = FT_LOAD_NO_SCALE;

/* The file fontconfig matches for `pattern` (e.g. "DejaVu Sans:bold"), copied into `out`, with
 * the family it chose in `family`. Returns 0 on success, 1 when fontconfig has no match. */
static inline int mng_font_match(const char *pattern, char *out, size_t out_len, char *family, size_t family_len) {
    if (!FcInit()) return 1;
    FcPattern *p = FcNameParse((const FcChar8 *)pattern);
    if (!p) return 1;
    FcConfigSubstitute(NULL, p, FcMatchPattern);
    FcDefaultSubstitute(p);
    FcResult result = FcResultNoMatch;
    FcPattern *match = FcFontMatch(NULL, p, &result);
    FcPatternDestroy(p);
    if (!match) return 1;
    FcChar8 *file = NULL, *fam = NULL;
    int ok = FcPatternGetString(match, FC_FILE, 0, &file) == FcResultMatch && file;
    if (ok) {
        snprintf(out, out_len, "%s", (const char *)file);
        if (FcPatternGetString(match, FC_FAMILY, 0, &fam) == FcResultMatch && fam) snprintf(family, family_len, "%s", (const char *)fam);
        else if (family_len) family[0] = 0;
    }
    FcPatternDestroy(match);
    return ok ? 0 : 1;
}
