/* tcpinfo.h — what the kernel knows about a TCP socket that libuv does not
 * tell: how many bytes the peer has acknowledged. Used to tell a slow but
 * reading peer from a stalled one (the kernel wakes a writer only once half
 * its send buffer is free, which a slow reader can take longer than the
 * write timeout to do). Any thread; no state. */
#ifndef RELAY_TCPINFO_H
#define RELAY_TCPINFO_H

#include <stdint.h>

/* Bytes of ours the peer has acknowledged on TCP socket fd so far (Linux
 * tcpi_bytes_acked). Returns 0 and stores it in *acked, or -1 when the
 * kernel does not say (not TCP, or too old). */
int tcp_bytes_acked(int fd, uint64_t *acked);

#endif
