/* The C tests' one assertion: CHECK(cond) counts, reports a failure with its line and goes on;
 * main ends with `return check_summary();`. */
#ifndef LUAGATE_TEST_CHECK_H
#define LUAGATE_TEST_CHECK_H

#include <stdio.h>

static int failures, checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

/* Prints the count; the exit status: 1 if any check failed. */
static inline int check_summary(void) {
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}

#endif
