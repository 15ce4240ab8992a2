/* systemd's readiness protocol (Type=notify): a datagram to $NOTIFY_SOCKET, written here rather
 * than linking libsystemd for one sendto. Without NOTIFY_SOCKET (not under systemd) it does nothing. */
#ifndef LUAGATE_NOTIFY_H
#define LUAGATE_NOTIFY_H

/* Send state lines such as "READY=1" or "MAINPID=42\nREADY=1". 0 or a negative errno. */
int notify_systemd(const char *state);

#endif
