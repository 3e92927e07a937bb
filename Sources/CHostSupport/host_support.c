#define _GNU_SOURCE
#include "host_support.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

int mng_send_with_fd(int socket, const void *bytes, size_t len, int fd) {
    size_t sent = 0;
    int attach = fd >= 0;
    while (sent < len) {
        struct iovec iov = {(char *)bytes + sent, len - sent};
        union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        if (attach) {
            memset(&control, 0, sizeof control);
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof control.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        ssize_t n = sendmsg(socket, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        sent += (size_t)n;
        attach = 0;   /* the descriptor travels with the first byte */
    }
    return 0;
}

long mng_recv_with_fd(int socket, void *bytes, size_t cap, int *fd) {
    *fd = -1;
    for (;;) {
        struct iovec iov = {bytes, cap};
        union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * 4)]; } control;
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        ssize_t n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int got[4];
                memcpy(got, CMSG_DATA(c), count * sizeof(int));
                for (size_t i = 0; i < count; i++) {
                    if (*fd < 0) *fd = got[i]; else close(got[i]);   /* one descriptor per message */
                }
            }
        }
        return (long)n;
    }
}

int mng_memfd(const char *name, uint64_t size) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int mng_socketpair(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : -errno;
}
