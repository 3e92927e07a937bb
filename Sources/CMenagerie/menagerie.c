/* The ABI is header-only; this file gives SwiftPM a translation unit for the CMenagerie target
 * and checks at compile time that the layout plugins rely on does not drift. */
#include "menagerie.h"

_Static_assert(sizeof(mng_tensor) == 40, "mng_tensor layout changed: bump MENAGERIE_ABI_MAJOR");
_Static_assert(offsetof(mng_plugin_descriptor, struct_size) == 8, "descriptor header changed");
_Static_assert(offsetof(mng_host_services, seed) == 88, "host services 1.0 layout changed: bump MENAGERIE_ABI_MAJOR");
_Static_assert(offsetof(mng_host_services, phase) == 96 && offsetof(mng_host_services, record) == 104,
               "host services 1.1 fields moved: they may only be appended");
_Static_assert(offsetof(mng_host_services, emit_text) == 112 && sizeof(mng_host_services) == 120,
               "host services 1.2 field moved: fields may only be appended");
