/* test_fcm.c — the pure FCM pieces (docs/features/push.md): every credential
 * rejection of the reference's ParseFCMCredentials_Rejects and the accepted key forms, the RS256
 * assertion verified against the public key, the token form and reply, the
 * wake object with Go's decoding rules, the exact send body, message-id and
 * reason filtering (NonSuccessReplyNamesFCMReason, SuccessReplyMessageID),
 * the UNREGISTERED classification and the token fingerprint. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ops/checks.h"
#include "push/fcm.h"
#include "fcm_testkit.h"

static EVP_PKEY *g_rsa, *g_ec;

static int setup(void **state)
{
    (void)state;
    g_rsa = EVP_RSA_gen(2048);
    g_ec = EVP_EC_gen("P-256");
    return g_rsa && g_ec ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(g_rsa);
    EVP_PKEY_free(g_ec);
    return 0;
}

static int parse(const char *json, struct fcm_creds *c)
{
    return fcm_creds_parse(json, strlen(json), c);
}

static void test_creds_accepts_rsa_forms(void **state)
{
    (void)state;
    const char *forms[] = {"pkcs8", "pkcs1"};
    for (size_t i = 0; i < 2; i++) {
        char *pem = tk_key_pem(g_rsa, forms[i]);
        char *json = tk_creds_json("service_account", "relay@p.iam.gserviceaccount.com", pem,
                                   "kid-1", "https://127.0.0.1:9/token");
        struct fcm_creds c;
        assert_int_equal(parse(json, &c), 0);
        assert_string_equal(c.client_email, "relay@p.iam.gserviceaccount.com");
        assert_string_equal(c.key_id, "kid-1");
        assert_string_equal(c.token_uri, "https://127.0.0.1:9/token");
        assert_int_equal(EVP_PKEY_eq(c.key, g_rsa), 1);
        assert_true(checks_fcm_credentials_valid(json));
        fcm_creds_free(&c);
        assert_null(c.key);
        free(json);
        free(pem);
    }
}

/* ParseFCMCredentials_DefaultsTokenURL; no private_key_id means no kid. */
static void test_creds_defaults(void **state)
{
    (void)state;
    char *pem = tk_key_pem(g_rsa, "pkcs8");
    char *json = tk_creds_json("service_account", "a@b", pem, NULL, NULL);
    struct fcm_creds c;
    assert_int_equal(parse(json, &c), 0);
    assert_string_equal(c.token_uri, FCM_DEFAULT_TOKEN_URI);
    assert_string_equal(c.token_uri, "https://oauth2.googleapis.com/token");
    assert_null(c.key_id);
    fcm_creds_free(&c);
    free(json);
    json = tk_creds_json("service_account", "a@b", pem, "", "");
    assert_int_equal(parse(json, &c), 0);
    assert_string_equal(c.token_uri, FCM_DEFAULT_TOKEN_URI);
    assert_null(c.key_id);
    fcm_creds_free(&c);
    free(json);
    /* keys are matched as Go does: case-insensitively */
    json_t *o = json_object();
    json_object_set_new(o, "TYPE", json_string("service_account"));
    json_object_set_new(o, "Client_Email", json_string("a@b"));
    json_object_set_new(o, "private_KEY", json_string(pem));
    char *s = json_dumps(o, JSON_COMPACT);
    assert_int_equal(parse(s, &c), 0);
    fcm_creds_free(&c);
    free(s);
    json_decref(o);
    free(pem);
}

static void test_creds_rejects(void **state)
{
    (void)state;
    char *rsa = tk_key_pem(g_rsa, "pkcs8");
    char *ec8 = tk_key_pem(g_ec, "ec8");
    char *sec1 = tk_key_pem(g_ec, "sec1");
    char truncated[200];
    snprintf(truncated, sizeof truncated, "%.*s\n-----END PRIVATE KEY-----\n", 120, rsa);
    char *rows[] = {
        strdup("not json"),
        strdup(""),
        strdup("[]"),
        strdup("\"service_account\""),
        strdup("null"),
        strdup("{}"),
        tk_creds_json("authorized_user", "a@b", rsa, NULL, NULL),
        tk_creds_json("Service_Account", "a@b", rsa, NULL, NULL),
        tk_creds_json(NULL, "a@b", rsa, NULL, NULL),
        tk_creds_json("service_account", NULL, rsa, NULL, NULL),
        tk_creds_json("service_account", "", rsa, NULL, NULL),
        tk_creds_json("service_account", "a@b", NULL, NULL, NULL),
        tk_creds_json("service_account", "a@b", "", NULL, NULL),
        tk_creds_json("service_account", "a@b", "garbage key", NULL, NULL),
        tk_creds_json("service_account", "a@b",
                      "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n",
                      NULL, NULL),
        tk_creds_json("service_account", "a@b", truncated, NULL, NULL),
        tk_creds_json("service_account", "a@b", ec8, NULL, NULL),
        tk_creds_json("service_account", "a@b", sec1, NULL, NULL),
        strdup("{\"type\":\"service_account\",\"client_email\":7,\"private_key\":\"x\"}"),
        strdup("{\"type\":1,\"client_email\":\"a@b\"}"),
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct fcm_creds c;
        memset(&c, 0x5a, sizeof c);
        if (parse(rows[i], &c) != -1)
            fail_msg("row %zu accepted", i);
        assert_null(c.key);
        assert_null(c.client_email);
        assert_false(checks_fcm_credentials_valid(rows[i]));
        free(rows[i]);
    }
    /* wrong types for the optional members fail the whole key, as Go's
     * Unmarshal does */
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("service_account"));
    json_object_set_new(o, "client_email", json_string("a@b"));
    json_object_set_new(o, "private_key", json_string(rsa));
    json_object_set_new(o, "private_key_id", json_integer(5));
    char *s = json_dumps(o, JSON_COMPACT);
    struct fcm_creds c;
    assert_int_equal(parse(s, &c), -1);
    free(s);
    json_object_set_new(o, "private_key_id", json_null());
    json_object_set_new(o, "token_uri", json_true());
    s = json_dumps(o, JSON_COMPACT);
    assert_int_equal(parse(s, &c), -1);
    free(s);
    json_decref(o);
    /* the error text is fixed and carries nothing of the input */
    assert_string_equal(FCM_ERR_CREDENTIALS,
                        "relay: fcm credentials are not a service-account JSON key");
    free(rsa);
    free(ec8);
    free(sec1);
}

static void test_jwt(void **state)
{
    (void)state;
    char *pem = tk_key_pem(g_rsa, "pkcs1");
    char *json = tk_creds_json("service_account", "relay@p.iam", pem, "k\"1", "https://t/tok");
    struct fcm_creds c;
    char *header, *claims;
    assert_int_equal(parse(json, &c), 0);
    char *jwt = fcm_jwt(&c, 1700000000);
    assert_non_null(jwt);
    assert_true(tk_jwt_verify(jwt, g_rsa, &header, &claims));
    assert_string_equal(header, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k\\\"1\"}");
    assert_string_equal(claims,
                        "{\"iss\":\"relay@p.iam\",\"scope\":\"https://www.googleapis.com/auth/"
                        "firebase.messaging\",\"aud\":\"https://t/tok\",\"exp\":1700003590,"
                        "\"iat\":1699999990}");
    free(header);
    free(claims);
    /* a different key does not verify it */
    EVP_PKEY *other = EVP_RSA_gen(1024);
    assert_false(tk_jwt_verify(jwt, other, &header, &claims));
    free(header);
    free(claims);
    EVP_PKEY_free(other);
    free(jwt);
    fcm_creds_free(&c);
    free(json);
    /* no kid without private_key_id */
    json = tk_creds_json("service_account", "a@b", pem, NULL, NULL);
    assert_int_equal(parse(json, &c), 0);
    jwt = fcm_jwt(&c, 100);
    assert_true(tk_jwt_verify(jwt, g_rsa, &header, &claims));
    assert_string_equal(header, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
    assert_non_null(strstr(claims, "\"aud\":\"https://oauth2.googleapis.com/token\""));
    char *form = fcm_token_form(jwt);
    char want[4096];
    snprintf(want, sizeof want,
             "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s",
             jwt);
    assert_string_equal(form, want);
    free(form);
    free(header);
    free(claims);
    free(jwt);
    fcm_creds_free(&c);
    free(json);
    free(pem);
}

static void test_token_reply(void **state)
{
    static const struct {
        const char *body;
        int rc;
        const char *token;
        int64_t expires;
    } rows[] = {
        {"{\"access_token\":\"ya29.abc\",\"token_type\":\"Bearer\",\"expires_in\":3599}", 0,
         "ya29.abc", 3599},
        {"{\"access_token\":\"t\"}", 0, "t", 0},
        {"{\"access_token\":\"t\",\"expires_in\":\"120\"}", 0, "t", 120},
        {"{\"access_token\":\"t\",\"expires_in\":-5}", 0, "t", 0},
        {"{\"Access_Token\":\"t\",\"expires_in\":null}", 0, "t", 0},
        {"{\"access_token\":\"\"}", -1, NULL, 0},
        {"{\"access_token\":\"a b\"}", -1, NULL, 0},
        {"{\"access_token\":\"a\\r\\nX-Evil: 1\"}", -1, NULL, 0},
        {"{\"access_token\":5}", -1, NULL, 0},
        {"{\"access_token\":\"t\",\"expires_in\":[]}", -1, NULL, 0},
        {"{}", -1, NULL, 0},
        {"[]", -1, NULL, 0},
        {"{\"access_token\":\"t\"", -1, NULL, 0},
        {"", -1, NULL, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *tok = (char *)1;
        int64_t exp = -1;
        int rc = fcm_token_reply(rows[i].body, strlen(rows[i].body), &tok, &exp);
        if (rc != rows[i].rc)
            fail_msg("row %zu: rc %d", i, rc);
        if (rc == 0) {
            assert_string_equal(tok, rows[i].token);
            assert_int_equal(exp, rows[i].expires);
            free(tok);
        } else {
            assert_null(tok);
        }
    }
}

static void test_wake_parse(void **state)
{
    static const struct {
        const char *raw;
        enum fcm_wake want;
        const char *token;
        size_t token_len;
    } rows[] = {
        {"{\"platform\":\"fcm\",\"token\":\"abc\"}", FCM_WAKE_OK, "abc", 3},
        {" { \"token\" : \"abc\" , \"platform\" : \"fcm\" } ", FCM_WAKE_OK, "abc", 3},
        {"{\"PLATFORM\":\"fcm\",\"Token\":\"x\",\"extra\":{\"a\":[1,\"}\"]}}", FCM_WAKE_OK, "x", 1},
        {"{\"platform\":\"fcm\",\"to\\u212aen\":\"kelvin\"}", FCM_WAKE_OK, "kelvin", 6},
        {"{\"platform\":\"fcm\",\"to\xe2\x84\xaa"
         "en\":\"kelvin\"}",
         FCM_WAKE_OK, "kelvin", 6},
        {"{\"platform\":\"fcm\",\"token\":\"a\",\"token\":\"b\"}", FCM_WAKE_OK, "b", 1},
        {"{\"platform\":\"fcm\",\"token\":\"a\",\"TOKEN\":null}", FCM_WAKE_OK, "a", 1},
        {"{\"platform\":\"fcm\",\"token\":\"a\\u0000b\\n\\ud83d\\ude00\\ud800\"}", FCM_WAKE_OK,
         "a\0b\n\xf0\x9f\x98\x80\xef\xbf\xbd", 11},
        {"{\"\\u0070latform\":\"fcm\",\"token\":\"t\"}", FCM_WAKE_OK, "t", 1},
        {"{\"platform\":\"apns\",\"token\":\"abc\"}", FCM_WAKE_PLATFORM, NULL, 0},
        {"{\"platform\":\"FCM\",\"token\":\"abc\"}", FCM_WAKE_PLATFORM, NULL, 0},
        {"{\"token\":\"abc\"}", FCM_WAKE_PLATFORM, NULL, 0},
        {"{\"platform\":null,\"token\":\"abc\"}", FCM_WAKE_PLATFORM, NULL, 0},
        {"{}", FCM_WAKE_PLATFORM, NULL, 0},
        {"null", FCM_WAKE_PLATFORM, NULL, 0},
        {"{\"platform\":\"fcm\",\"token\":\"\"}", FCM_WAKE_EMPTY_TOKEN, NULL, 0},
        {"{\"platform\":\"fcm\"}", FCM_WAKE_EMPTY_TOKEN, NULL, 0},
        {"{\"platform\":\"fcm\",\"token\":5}", FCM_WAKE_MALFORMED, NULL, 0},
        {"{\"platform\":1,\"token\":\"abc\"}", FCM_WAKE_MALFORMED, NULL, 0},
        {"{\"platform\":\"apns\",\"token\":[]}", FCM_WAKE_MALFORMED, NULL, 0},
        {"\"fcm\"", FCM_WAKE_MALFORMED, NULL, 0},
        {"[]", FCM_WAKE_MALFORMED, NULL, 0},
        {"true", FCM_WAKE_MALFORMED, NULL, 0},
        {"{\"platform\":\"fcm\",", FCM_WAKE_MALFORMED, NULL, 0},
        {"", FCM_WAKE_MALFORMED, NULL, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *tok;
        size_t n;
        enum fcm_wake w =
            fcm_wake_parse((const uint8_t *)rows[i].raw, strlen(rows[i].raw), &tok, &n);
        if (w != rows[i].want)
            fail_msg("row %zu: got %d", i, (int)w);
        if (w == FCM_WAKE_OK) {
            assert_int_equal(n, rows[i].token_len);
            assert_memory_equal(tok, rows[i].token, n);
            free(tok);
        } else {
            assert_null(tok);
        }
    }
    assert_string_equal(fcm_wake_error(FCM_WAKE_MALFORMED), "relay: malformed push_wake");
    assert_string_equal(fcm_wake_error(FCM_WAKE_PLATFORM),
                        "relay: push_wake platform not supported");
    assert_string_equal(fcm_wake_error(FCM_WAKE_EMPTY_TOKEN), "relay: push_wake token is empty");
    assert_null(fcm_wake_error(FCM_WAKE_OK));
}

/* FCMSender_SendRequestShape: exactly token + android.priority HIGH. */
static void test_send_body(void **state)
{
    size_t n;
    (void)state;
    char *b = fcm_send_body("dev-tok:APA91b", 14, &n);
    assert_string_equal(b, "{\"message\":{\"token\":\"dev-tok:APA91b\",\"android\":{\"priority\":"
                           "\"HIGH\"}}}");
    assert_int_equal(n, strlen(b));
    free(b);
    b = fcm_send_body("a\"\\<\n\0", 6, &n);
    assert_string_equal(b, "{\"message\":{\"token\":\"a\\\"\\\\\\u003c\\n\\u0000\",\"android\":{"
                           "\"priority\":\"HIGH\"}}}");
    free(b);
}

static void test_message_id(void **state)
{
    char long_ok[257], too_long[258];
    (void)state;
    memset(long_ok, 'a', 256);
    long_ok[256] = '\0';
    memset(too_long, 'a', 257);
    too_long[257] = '\0';
    assert_true(
        fcm_message_id_valid("projects/p/messages/0:1500415314455276%31bd1c9631bd1c96", 55));
    assert_true(fcm_message_id_valid("a-b_c", 5));
    assert_true(fcm_message_id_valid(long_ok, 256));
    assert_false(fcm_message_id_valid(too_long, 257));
    assert_false(fcm_message_id_valid("", 0));
    assert_false(fcm_message_id_valid("a b", 3));
    assert_false(fcm_message_id_valid("a\nb", 3));
    assert_false(fcm_message_id_valid("a=b", 3));
    assert_false(fcm_message_id_valid("a\"b", 3));
    assert_false(fcm_message_id_valid("\xc3\xa9", 2));

    static const struct {
        const char *body;
        const char *id;
    } rows[] = {
        {"{\"name\":\"projects/p/messages/0:1%2\"}", "projects/p/messages/0:1%2"},
        {"{\"name\":\"bad name\"}", ""},
        {"{\"name\":\"\"}", ""},
        {"{\"name\":5}", ""},
        {"{}", ""},
        {"", ""},
        {"not json", ""},
        {"{\"NAME\":\"x\"}", "x"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct fcm_reply r;
        fcm_send_reply(200, rows[i].body, strlen(rows[i].body), &r);
        assert_int_equal(r.outcome, FCM_SENT);
        assert_string_equal(r.message_id, rows[i].id);
        assert_string_equal(r.err, "");
    }
    struct fcm_reply r;
    fcm_send_reply(204, "", 0, &r);
    assert_int_equal(r.outcome, FCM_SENT);
    /* FailureReturnsNoID */
    fcm_send_reply(500, rows[0].body, strlen(rows[0].body), &r);
    assert_int_equal(r.outcome, FCM_FAILED);
    assert_string_equal(r.message_id, "");
}

#define FCM_ERR_DETAIL(code)                                                                       \
    "{\"@type\":\"type.googleapis.com/google.firebase.fcm.v1.FcmError\",\"errorCode\":\"" code "\"}"

static void test_send_failures(void **state)
{
    static const struct {
        long status;
        const char *body;
        enum fcm_outcome outcome;
        const char *err;
    } rows[] = {
        {404,
         "{\"error\":{\"code\":404,\"message\":\"Requested entity was not found.\",\"status\":"
         "\"NOT_FOUND\",\"details\":[" FCM_ERR_DETAIL("UNREGISTERED") "]}}",
         FCM_UNREGISTERED, "relay: fcm send failed: status 404 (NOT_FOUND, UNREGISTERED)"},
        {400,
         "{\"error\":{\"status\":\"INVALID_ARGUMENT\",\"message\":\"The registration token "
         "is not a valid FCM registration token\"}}",
         FCM_FAILED, "relay: fcm send failed: status 400 (INVALID_ARGUMENT)"},
        {403, "{\"error\":{\"details\":[" FCM_ERR_DETAIL("SENDER_ID_MISMATCH") "]}}", FCM_FAILED,
         "relay: fcm send failed: status 403 (SENDER_ID_MISMATCH)"},
        {404, "<html>not found</html>", FCM_FAILED, "relay: fcm send failed: status 404"},
        {500, "", FCM_FAILED, "relay: fcm send failed: status 500"},
        {307, "", FCM_FAILED, "relay: fcm send failed: status 307"},
        {401, "{\"error\":{\"status\":\"UNAUTHENTICATED\"}}", FCM_FAILED,
         "relay: fcm send failed: status 401 (UNAUTHENTICATED)"},
        /* only the first FcmError entry counts; other types are skipped */
        {404,
         "{\"error\":{\"status\":\"NOT_FOUND\",\"details\":[{\"@type\":\"type.googleapis.com/"
         "google.rpc.BadRequest\",\"errorCode\":\"NOPE\"}," FCM_ERR_DETAIL(
             "UNREGISTERED") "," FCM_ERR_DETAIL("QUOTA_EXCEEDED") "]}}",
         FCM_UNREGISTERED, "relay: fcm send failed: status 404 (NOT_FOUND, UNREGISTERED)"},
        /* malformed reasons are dropped one by one */
        {400,
         "{\"error\":{\"status\":\"not ok\",\"details\":[" FCM_ERR_DETAIL("QUOTA_EXCEEDED") "]}}",
         FCM_FAILED, "relay: fcm send failed: status 400 (QUOTA_EXCEEDED)"},
        {400, "{\"error\":{\"status\":\"A\\nB\"}}", FCM_FAILED,
         "relay: fcm send failed: status 400"},
        {400,
         "{\"error\":{\"status\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "A\"}}",
         FCM_FAILED, "relay: fcm send failed: status 400"},
        {400, "{\"error\":{\"status\":\"\"}}", FCM_FAILED, "relay: fcm send failed: status 400"},
        /* a lowercase errorCode is not a reason, so not UNREGISTERED either */
        {404, "{\"error\":{\"details\":[" FCM_ERR_DETAIL("unregistered") "]}}", FCM_FAILED,
         "relay: fcm send failed: status 404"},
        /* a body that does not decode as Go's struct names no reason */
        {404, "{\"error\":{\"status\":5}}", FCM_FAILED, "relay: fcm send failed: status 404"},
        {404, "{\"error\":{\"status\":\"NOT_FOUND\",\"details\":{}}}", FCM_FAILED,
         "relay: fcm send failed: status 404"},
        {404, "{\"error\":\"NOT_FOUND\"}", FCM_FAILED, "relay: fcm send failed: status 404"},
        {404, "{\"error\":null}", FCM_FAILED, "relay: fcm send failed: status 404"},
        {404, "{\"error\":{\"status\":\"NOT_FOUND\"}} trailing", FCM_FAILED,
         "relay: fcm send failed: status 404"},
        {404, "{\"Error\":{\"Status\":\"NOT_FOUND\",\"DETAILS\":[null]}}", FCM_FAILED,
         "relay: fcm send failed: status 404 (NOT_FOUND)"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct fcm_reply r;
        fcm_send_reply(rows[i].status, rows[i].body, strlen(rows[i].body), &r);
        if (r.outcome != rows[i].outcome || strcmp(r.err, rows[i].err) != 0)
            fail_msg("row %zu: %d %s", i, (int)r.outcome, r.err);
        assert_string_equal(r.message_id, "");
        assert_null(strstr(r.err, "message"));
    }
    /* truncated past 4 KiB: the caller passes the first 4096 bytes only */
    char big[FCM_REPLY_MAX + 64];
    int n = snprintf(big, sizeof big, "{\"error\":{\"status\":\"NOT_FOUND\",\"message\":\"");
    memset(big + n, 'x', sizeof big - (size_t)n);
    struct fcm_reply r;
    fcm_send_reply(404, big, FCM_REPLY_MAX, &r);
    assert_string_equal(r.err, "relay: fcm send failed: status 404");
}

/* TokenFingerprint: first 8 hex chars of SHA-256. */
static void test_token_fp(void **state)
{
    char fp[9];
    (void)state;
    fcm_token_fp("abc", 3, fp);
    assert_string_equal(fp, "ba7816bf");
    fcm_token_fp("", 0, fp);
    assert_string_equal(fp, "e3b0c442");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_creds_accepts_rsa_forms),
        cmocka_unit_test(test_creds_defaults),
        cmocka_unit_test(test_creds_rejects),
        cmocka_unit_test(test_jwt),
        cmocka_unit_test(test_token_reply),
        cmocka_unit_test(test_wake_parse),
        cmocka_unit_test(test_send_body),
        cmocka_unit_test(test_message_id),
        cmocka_unit_test(test_send_failures),
        cmocka_unit_test(test_token_fp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
