#ifndef MENAGERIE_LAUNCH_H
#define MENAGERIE_LAUNCH_H

/// Shortens how long OpenBLAS's idle worker threads spin before they sleep (launch.c says why):
/// unless OPENBLAS_THREAD_TIMEOUT is set, sets it to `exponent` (2^exponent cycles) and restarts
/// OpenBLAS's thread pool so that it takes effect. Call once, at start-up, before any product.
/// Returns 1 if the pool was restarted, 0 if the user's value was kept or this OpenBLAS exports no
/// thread-pool functions (then nothing changed).
int mng_shorten_openblas_spin(int exponent);

/// The OPENBLAS_THREAD_TIMEOUT this process runs with; NULL if unset (OpenBLAS's 2^28 cycles).
const char *mng_openblas_thread_timeout(void);

#endif
