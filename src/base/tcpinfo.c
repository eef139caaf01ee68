/* tcpinfo.c — TCP_INFO read with the kernel's own struct layout (glibc's
 * copy of struct tcp_info stops before tcpi_bytes_acked), kept in its own
 * file because <linux/tcp.h> and <netinet/tcp.h> cannot share one. */
#include "base/tcpinfo.h"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

int tcp_bytes_acked(int fd, uint64_t *acked)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return -1;
    if (len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked)
        return -1;
    *acked = ti.tcpi_bytes_acked;
    return 0;
}
