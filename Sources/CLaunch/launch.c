// Settings the `menagerie` executable applies at start-up, before any work.
//
// OpenBLAS's idle worker threads spin on sched_yield for OPENBLAS_THREAD_TIMEOUT = 2^n cycles
// before they sleep; the default 2^28 (~0.1 s) keeps a worker spinning through the elementwise work
// between two products, where it competes for this machine's two cores with the threads doing that
// work. Measured (Docs/benchmarks.md): the SD VAE decode at 256 px 4.3-4.8 s with the default,
// 3.3-3.9 s with a short spin; SAM 2's tracked frame 4.1 -> 3.85 s. 2^16 cycles (~25 us) is about
// what an OpenMP runtime spins before sleeping.
//
// OpenBLAS reads the variable once, in its library constructor, before main() runs (and glibc
// resets the environment after an executable's preinit functions, so it cannot be set earlier).
// So: set the variable, have OpenBLAS read its environment again, and restart its thread pool,
// which takes the timeout when it starts. The three functions are exported by the pthreads build
// (Debian's libopenblas0-pthread) but are not public API: they are looked up with dlsym, and
// without them nothing changes.

#define _GNU_SOURCE
#include "launch.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int mng_shorten_openblas_spin(int exponent) {
    if (getenv("OPENBLAS_THREAD_TIMEOUT") != NULL) return 0;
    void (*read_env)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "openblas_read_env");
    int (*shutdown)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
    int (*init)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_init");
    if (read_env == NULL || shutdown == NULL || init == NULL) return 0;
    char value[16];
    snprintf(value, sizeof value, "%d", exponent);
    setenv("OPENBLAS_THREAD_TIMEOUT", value, 0);
    read_env();
    shutdown();
    init();
    return 1;
}

const char *mng_openblas_thread_timeout(void) { return getenv("OPENBLAS_THREAD_TIMEOUT"); }
