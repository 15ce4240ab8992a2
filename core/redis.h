/* A Redis client on the libuv loop: one pipelined connection to one server, through hiredis's
 * async API and an event adapter of our own.
 *
 * The connection opens on the first command, sends AUTH and SELECT before anything else, and is
 * opened again after it breaks: at once the first time, then with a growing pause while the server
 * stays unreachable. While it is down, commands fail at once ("connection refused: ...") instead of
 * waiting. Every command has a deadline, kept by one timer per connection; a command past it is
 * answered "timeout: ..." and its late reply dropped. A connection whose oldest command stays
 * unanswered a second past its deadline is taken as dead (a peer gone without a reset) and reopened.
 *
 * Callbacks run from inside hiredis: they may copy the reply and queue work, nothing more (no Lua,
 * no new command, no close). */
#ifndef LUAGATE_REDIS_H
#define LUAGATE_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct redisReply;
typedef struct gw_redis gw_redis;
typedef struct gw_redis_cmd gw_redis_cmd;

typedef struct gw_redis_options {
    const char *name;     /* for log lines and errors */
    const char *host;     /* an IP address: no name is resolved (that would block the loop) */
    int port;
    const char *user;     /* AUTH user password (Redis 6 ACLs) when both are set */
    const char *password; /* AUTH password when set */
    int db;               /* SELECT db when not 0 */
    uint64_t timeout_ms;  /* to connect and be ready; and the commands' default */
} gw_redis_options;

/* Called once for every command that was not detached, from inside hiredis: reply (valid during
 * the call) or, when there is none, err: "timeout: ...", "connection refused: ...",
 * "connection reset: ...". An error reply from the server is a reply. */
typedef void (*gw_redis_cb)(const struct redisReply *reply, const char *err, void *data);

/* A client; it connects on its first command. The options' strings are copied. */
int redis_new(gw_redis **out, uv_loop_t *loop, const gw_redis_options *o);

/* Send a command (argv: its words, any bytes), answered through cb within timeout_ms (0: the
 * client's timeout). Returns 0 and the command in *out, or a negative error with a message in *err
 * (valid until the next call on r) when it fails at once: the server is down, out of memory. */
int redis_command(gw_redis *r, int argc, const char **argv, const size_t *argvlen, uint64_t timeout_ms,
                  gw_redis_cb cb, void *data, gw_redis_cmd **out, const char **err);

/* The caller no longer wants the answer: cb will not run; a reply that comes is dropped. */
void redis_detach(gw_redis_cmd *c);

/* "idle", "connecting", "ready" or "down"; and how many commands wait for a reply (detached ones
 * included: their late replies are still owed). For tests and stats. */
const char *redis_state(const gw_redis *r);
size_t redis_pending(const gw_redis *r);

/* Close the connection: commands still waiting are answered "connection reset: ... closed"; the
 * memory is freed once the loop has closed the handles. */
void redis_close(gw_redis *r);

#endif
