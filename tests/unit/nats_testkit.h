/* nats_testkit.h — shared by test_kv.c and test_bus.c: a real nats-server
 * on a free loopback port, started by the test and always stopped again
 * (nats_test_stop, and atexit should an assertion end the run early; the
 * child also dies with the test through PR_SET_PDEATHSIG). Its log and
 * JetStream store live in a temporary directory removed on stop. The binary
 * is $NATS_SERVER_BIN, else nats-server on PATH, else /usr/sbin's; without
 * one a test skips. Include after <cmocka.h>. */
#ifndef NATS_TESTKIT_H
#define NATS_TESTKIT_H

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NATS_TEST_READY_MS 10000 /* the server must accept connections within this */
#define NATS_TEST_MAX      4     /* servers one test binary may run */

struct nats_testsrv {
    pid_t pid;
    int port;
    bool js;         /* started with -js (JetStream, store in dir) */
    const char *tag; /* the test's name, for messages and the directory */
    char dir[64];
    char url[64];
};

static struct nats_testsrv *nats_test_all[NATS_TEST_MAX];

__attribute__((unused)) static const char *nats_test_find_server(void)
{
    static char path[4096];
    const char *env = getenv("NATS_SERVER_BIN");
    const char *p = getenv("PATH");

    if (env != NULL && access(env, X_OK) == 0)
        return env;
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        snprintf(path, sizeof path, "%.*s/nats-server", (int)n, p);
        if (n > 0 && access(path, X_OK) == 0)
            return path;
        p = end ? end + 1 : NULL;
    }
    return access("/usr/sbin/nats-server", X_OK) == 0 ? "/usr/sbin/nats-server" : NULL;
}

__attribute__((unused)) static int nats_test_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

static bool nats_test_port_open(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;

    if (fd >= 0)
        close(fd);
    return ok;
}

static int nats_test_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Ends the process (it may be SIGSTOPped), keeps the directory. */
static void nats_test_kill(struct nats_testsrv *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGCONT);
        kill(s->pid, SIGTERM);
        for (int i = 0; i < 50 && waitpid(s->pid, NULL, WNOHANG) == 0; i++)
            usleep(100 * 1000);
        if (kill(s->pid, SIGKILL) == 0)
            waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* Idempotent: teardown, and atexit after a failed assertion. */
static void nats_test_stop(struct nats_testsrv *s)
{
    nats_test_kill(s);
    if (s->dir[0] != '\0') {
        nftw(s->dir, nats_test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        s->dir[0] = '\0';
    }
}

static void nats_test_stop_all(void)
{
    for (int i = 0; i < NATS_TEST_MAX; i++)
        if (nats_test_all[i] != NULL)
            nats_test_stop(nats_test_all[i]);
}

static void nats_test_exec(const struct nats_testsrv *s, const char *bin)
{
    char p[16], log[96];

    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    snprintf(p, sizeof p, "%d", s->port);
    snprintf(log, sizeof log, "%s/server.log", s->dir);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    if (s->js)
        execl(bin, "nats-server", "-a", "127.0.0.1", "-p", p, "-js", "-sd", s->dir, (char *)NULL);
    else
        execl(bin, "nats-server", "-a", "127.0.0.1", "-p", p, (char *)NULL);
    _exit(127);
}

/* (Re)starts s's server on s->port and waits (bounded) until it accepts
 * connections. Returns 0 or -1 (with a message). */
static int nats_test_run(struct nats_testsrv *s, const char *bin)
{
    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0)
        nats_test_exec(s, bin);
    for (int waited = 0; waited < NATS_TEST_READY_MS; waited += 20) {
        if (waitpid(s->pid, NULL, WNOHANG) != 0) {
            s->pid = 0;
            fprintf(stderr, "%s: nats-server exited at start (see its log)\n", s->tag);
            return -1;
        }
        if (nats_test_port_open(s->port))
            return 0;
        usleep(20 * 1000);
    }
    fprintf(stderr, "%s: nats-server did not listen within %d ms\n", s->tag, NATS_TEST_READY_MS);
    return -1;
}

/* Starts a server on a free loopback port, with JetStream if js. */
__attribute__((unused)) static int nats_test_start(struct nats_testsrv *s, const char *bin,
                                                   const char *tag, bool js)
{
    int slot = 0;

    while (slot < NATS_TEST_MAX && nats_test_all[slot] != NULL && nats_test_all[slot] != s)
        slot++;
    if (slot == NATS_TEST_MAX)
        return -1;
    if (slot == 0 && nats_test_all[0] == NULL)
        atexit(nats_test_stop_all);
    nats_test_all[slot] = s;
    s->tag = tag;
    s->js = js;
    s->port = nats_test_free_port();
    snprintf(s->dir, sizeof s->dir, "/tmp/%s.XXXXXX", tag);
    if (mkdtemp(s->dir) == NULL) {
        s->dir[0] = '\0';
        return -1;
    }
    snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
    return nats_test_run(s, bin);
}

/* Kills the server and starts it again on the same port. */
__attribute__((unused)) static int nats_test_restart(struct nats_testsrv *s, const char *bin)
{
    nats_test_kill(s);
    return nats_test_run(s, bin);
}

/* True when /proc/<pid>/task/<tid>/stat says 'T' (stopped). */
static bool nats_test_task_stopped(pid_t pid, const char *tid)
{
    char path[320], buf[256];

    snprintf(path, sizeof path, "/proc/%d/task/%s/stat", (int)pid, tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *st = strrchr(buf, ')');
    return st != NULL && st[1] == ' ' && st[2] == 'T';
}

/* True once every thread of pid is stopped: kill(SIGSTOP) returns before
 * a thread running on another core has stopped, and that thread can still
 * answer a request sent right after it. */
static bool nats_test_stopped(pid_t pid)
{
    char path[64];
    struct dirent *e;
    bool all = true;

    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return false;
    while (all && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            all = nats_test_task_stopped(pid, e->d_name);
    closedir(d);
    return all;
}

/* SIGSTOPs the server and waits (bounded) until every thread is stopped. */
__attribute__((unused)) static void nats_test_freeze(struct nats_testsrv *s)
{
    kill(s->pid, SIGSTOP);
    for (int i = 0; i < 100 && !nats_test_stopped(s->pid); i++)
        usleep(10 * 1000);
}

#endif
