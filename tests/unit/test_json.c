/* Unit tests for common/json: bounded parsing and output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/json.h"

static void
test_json_parse_ok(void **state)
{
    pd_err err = PD_ERR_INIT;
    json_t *j = NULL;
    const char *doc = "{\"id\": \"20261124T020000Z\", \"size\": 8192}";
    (void)state;

    assert_int_equal(pd_json_parse(&j, doc, strlen(doc), 1024, "manifest", &err), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "size")), 8192);
    json_decref(j);
}

static void
test_json_parse_malformed_names_place(void **state)
{
    pd_err err = PD_ERR_INIT;
    json_t *j = NULL;
    const char *doc = "{\n\"id\": }";
    (void)state;

    assert_int_equal(pd_json_parse(&j, doc, strlen(doc), 1024, "manifest \"m\"", &err),
                     PD_ECORRUPT);
    assert_null(j);
    assert_non_null(strstr(err.msg, "manifest \"m\""));
    assert_non_null(strstr(err.msg, "line 2"));
}

static void
test_json_parse_over_limit(void **state)
{
    pd_err err = PD_ERR_INIT;
    json_t *j = NULL;
    (void)state;

    assert_int_equal(pd_json_parse(&j, "[1,2,3]", 7, 4, "reply", &err), PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "more than the 4 allowed"));
}

static void
test_json_parse_duplicate_keys_rejected(void **state)
{
    pd_err err = PD_ERR_INIT;
    json_t *j = NULL;
    const char *doc = "{\"a\": 1, \"a\": 2}";
    (void)state;

    assert_int_equal(pd_json_parse(&j, doc, strlen(doc), 1024, "doc", &err), PD_ECORRUPT);
}

static void
test_json_print_time_and_order(void **state)
{
    pd_err err = PD_ERR_INIT;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    json_t *j = json_object();
    (void)state;

    json_object_set_new(j, "z", json_integer(1));
    json_object_set_new(j, "a", pd_json_time(1795485600));
    assert_int_equal(pd_json_print(f, j, &err), 0);
    fclose(f);
    assert_string_equal(buf, "{\n  \"z\": 1,\n  \"a\": \"2026-11-24T02:00:00Z\"\n}\n");
    free(buf);
    json_decref(j);
}

int
main(void)
{
    pd_json_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_parse_ok),
        cmocka_unit_test(test_json_parse_malformed_names_place),
        cmocka_unit_test(test_json_parse_over_limit),
        cmocka_unit_test(test_json_parse_duplicate_keys_rejected),
        cmocka_unit_test(test_json_print_time_and_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
