/* accept_fail.c — LD_PRELOAD shim for the accept-error test: while the file
 * named by $ACCEPT_FAIL_FILE exists, accept4(2) fails with the errno it
 * names ("ENFILE", "ENOBUFS", "EMFILE", "ENOMEM", "EBADF") instead of
 * accepting. Lets an e2e test put the real binary under fd or memory
 * pressure it could not otherwise produce on demand. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    const char *path = getenv("ACCEPT_FAIL_FILE");
    if (path) {
        FILE *f = fopen(path, "r");
        if (f) {
            char name[16] = "";
            if (!fgets(name, sizeof name, f))
                name[0] = '\0';
            fclose(f);
            static const struct {
                const char *n;
                int e;
            } map[] = {{"ENFILE", ENFILE}, {"ENOBUFS", ENOBUFS}, {"EMFILE", EMFILE},
                       {"ENOMEM", ENOMEM}, {"EBADF", EBADF}};
            for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
                if (strncmp(name, map[i].n, strlen(map[i].n)) == 0) {
                    errno = map[i].e;
                    return -1;
                }
            }
        }
    }
    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    return real(fd, addr, len, flags);
}
