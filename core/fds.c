#include "fds.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

int fds_get(const char *name, int *out, int max) {
    const char *v = getenv(FDS_ENV);
    if (!v) return 0;
    size_t nlen = strlen(name);
    int n = 0;
    while (*v) {
        const char *eq = strchr(v, '=');
        if (!eq) return -1;
        char *end;
        long fd = strtol(eq + 1, &end, 10);
        if (end == eq + 1 || fd < 0 || (*end && *end != ',')) return -1;
        if ((size_t)(eq - v) == nlen && memcmp(v, name, nlen) == 0) {
            /* Inherited without close-on-exec: this process hands them on only on purpose. */
            if (n < max) fcntl((int)fd, F_SETFD, FD_CLOEXEC);
            if (n < max) out[n] = (int)fd;
            n++;
        }
        v = *end ? end + 1 : end;
    }
    return n;
}

void fds_forget(void) {
    unsetenv(FDS_ENV);
}

int fds_add(char *list, size_t len, const char *name, int fd) {
    size_t used = strlen(list);
    int n = snprintf(list + used, len - used, "%s%s=%d", used ? "," : "", name, fd);
    return n < 0 || (size_t)n >= len - used ? -1 : 0;
}

char **fds_env(const char *list) {
    size_t n = 0;
    while (environ[n]) n++;
    char **env = calloc(n + 2, sizeof *env);
    if (!env) return NULL;
    size_t k = 0, plen = strlen(FDS_ENV);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], FDS_ENV "=", plen + 1) != 0) env[k++] = environ[i];
    size_t len = plen + strlen(list) + 2;
    if (!(env[k] = malloc(len))) {
        free(env);
        return NULL;
    }
    snprintf(env[k], len, "%s=%s", FDS_ENV, list);
    return env;
}

void fds_env_free(char **env) {
    if (!env) return;
    size_t k = 0;
    while (env[k + 1]) k++;
    free(env[k]); /* the one string fds_env made: the others are environ's */
    free(env);
}
