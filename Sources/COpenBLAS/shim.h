#include <stddef.h>
#include <cblas.h>

/* LAPACK, bundled in libopenblas: the symmetric eigen decomposition (divide and conquer).
   Fortran calling convention; the trailing lengths are gfortran's hidden character lengths. */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info,
             size_t jobz_len, size_t uplo_len);
