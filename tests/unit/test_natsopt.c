/* test_natsopt.c — the TLS part of natsopt_common (--cluster-nats-ca,
 * --cluster-nats-cert/-key): which settings ask for TLS, that good PEM
 * files load, and that a file cnats cannot use fails at option time with
 * cnats' own text in natsopt_last_error (what boot step 12b logs). The
 * handshakes themselves are driven end to end
 * (tests/e2e/cluster/test_cluster_tls.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nats/nats.h>

#include "cluster/natsopt.h"
#include "tls_testkit.h"

/* A temporary file holding text; the caller unlinks and frees the path. */
static char *temp_file(const char *text)
{
    char *path = strdup("/tmp/test_natsopt-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static natsStatus apply(const struct natsopt_tls *tls)
{
    natsOptions *o = NULL;
    assert_int_equal(natsOptions_Create(&o), NATS_OK);
    natsStatus s = natsopt_common(o, "tls://127.0.0.1:4222", "t", NULL, tls);
    natsOptions_Destroy(o);
    return s;
}

static void test_tls_on(void **state)
{
    (void)state;
    assert_false(natsopt_tls_on(NULL));
    assert_false(natsopt_tls_on(&(struct natsopt_tls){0}));
    assert_false(natsopt_tls_on(&(struct natsopt_tls){.ca = "", .cert = "", .key = ""}));
    assert_true(natsopt_tls_on(&(struct natsopt_tls){.ca = "ca.pem"}));
    assert_true(natsopt_tls_on(&(struct natsopt_tls){.cert = "c.pem", .key = "k.pem"}));
    assert_int_equal(apply(NULL), NATS_OK); /* no TLS: nothing to load */
    assert_int_equal(apply(&(struct natsopt_tls){.ca = ""}), NATS_OK);
}

static void test_good_files_load(void **state)
{
    (void)state;
    struct ident id;
    ident_make(&id, 1);
    char *cert = temp_file(id.cert_pem), *key = temp_file(id.key_pem);
    assert_int_equal(apply(&(struct natsopt_tls){.ca = cert}), NATS_OK);
    assert_int_equal(apply(&(struct natsopt_tls){.ca = cert, .cert = cert, .key = key}), NATS_OK);
    assert_int_equal(apply(&(struct natsopt_tls){.cert = cert, .key = key}), NATS_OK);
    unlink(cert);
    unlink(key);
    free(cert);
    free(key);
    ident_free(&id);
}

/* natsopt_common's status and last error for tls. */
static const char *fails(const struct natsopt_tls *tls)
{
    natsStatus s = apply(tls);
    assert_int_not_equal(s, NATS_OK);
    return natsopt_last_error(s);
}

static void test_bad_files_fail_with_cnats_text(void **state)
{
    (void)state;
    struct ident a, b;
    ident_make(&a, 1);
    ident_make(&b, 2);
    char *junk = temp_file("not a certificate\n");
    char *cert = temp_file(a.cert_pem), *other_key = temp_file(b.key_pem);
    const char *e = fails(&(struct natsopt_tls){.ca = junk});
    assert_non_null(strstr(e, "trusted certificates"));
    assert_non_null(strstr(e, junk));   /* names the file */
    assert_null(strstr(e, "(natsopt")); /* without cnats' "(file.c:123): " prefix */
    e = fails(&(struct natsopt_tls){.cert = cert, .key = other_key});
    assert_non_null(strstr(e, "private key"));
    assert_null(strstr(e, "PRIVATE KEY")); /* the key's contents are never echoed */
    e = fails(&(struct natsopt_tls){.cert = junk, .key = other_key});
    assert_true(e[0] != '\0');
    e = fails(&(struct natsopt_tls){.ca = "/nonexistent/ca.pem"});
    assert_non_null(strstr(e, "/nonexistent/ca.pem"));
    for (char **p = (char *[]){junk, cert, other_key, NULL}; *p; p++) {
        unlink(*p);
        free(*p);
    }
    ident_free(&a);
    ident_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_on),
        cmocka_unit_test(test_good_files_load),
        cmocka_unit_test(test_bad_files_fail_with_cnats_text),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nats_CloseAndWait(2000);
    return rc;
}
