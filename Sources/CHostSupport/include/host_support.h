/* System calls the host needs that Swift cannot express directly: passing file descriptors over a
 * Unix socket (SCM_RIGHTS, whose CMSG_* macros are not imported) and anonymous shared memory. */
#ifndef MENAGERIE_HOST_SUPPORT_H
#define MENAGERIE_HOST_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

/* Sends `len` bytes with up to one file descriptor attached (fd < 0: none). Returns 0 or -errno. */
int mng_send_with_fd(int socket, const void *bytes, size_t len, int fd);

/* Receives up to `cap` bytes; a descriptor that came with them is stored in *fd (else -1).
 * Returns the byte count (0 at end of stream) or -errno. */
long mng_recv_with_fd(int socket, void *bytes, size_t cap, int *fd);

/* An anonymous memory file of `size` bytes (memfd_create + ftruncate), close-on-exec. Returns the
 * descriptor or -errno. */
int mng_memfd(const char *name, uint64_t size);

/* A connected pair of stream sockets, close-on-exec. Returns 0 or -errno. */
int mng_socketpair(int fds[2]);

#endif
