#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pidfile_write(const char *path, int pid) {
    char tmp[4200], text[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(text, sizeof text, "%d\n", pid);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    int r = write(fd, text, (size_t)n) == n ? 0 : -EIO;
    if (close(fd) && r == 0) r = -errno;
    if (r == 0 && rename(tmp, path)) r = -errno;
    if (r) unlink(tmp);
    return r;
}

int pidfile_read(const char *path) {
    char text[32] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    char *end;
    long pid = n > 0 ? strtol(text, &end, 10) : 0;
    if (pid <= 0 || pid > 0x3fffffff || (*end && *end != '\n')) return -EINVAL;
    return (int)pid;
}

void pidfile_remove(const char *path, int pid) {
    if (pidfile_read(path) == pid) unlink(path);
}
