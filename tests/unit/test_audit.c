/*
 * Unit tests for drills/audit: which pg_hba.conf addresses admit only this
 * machine (a trust line for replication elsewhere is a critical finding).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "drills/audit.h"

static void
test_audit_local_addresses(void **state)
{
    (void)state;
    assert_true(pd_audit_address_is_local("127.0.0.1", "255.255.255.255"));
    assert_true(pd_audit_address_is_local("127.0.0.0", "255.0.0.0"));
    assert_true(pd_audit_address_is_local("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    assert_true(pd_audit_address_is_local("localhost", NULL));
    assert_true(pd_audit_address_is_local("samehost", NULL));
}

static void
test_audit_network_addresses(void **state)
{
    (void)state;
    assert_false(pd_audit_address_is_local(NULL, NULL)); // "all"
    assert_false(pd_audit_address_is_local("all", NULL));
    assert_false(pd_audit_address_is_local("samenet", NULL));
    assert_false(pd_audit_address_is_local("backup.example.com", NULL));
    assert_false(pd_audit_address_is_local("0.0.0.0", "0.0.0.0"));
    assert_false(pd_audit_address_is_local("192.0.2.10", "255.255.255.255"));
    // A loopback address with a wide netmask admits far more than loopback.
    assert_false(pd_audit_address_is_local("127.0.0.1", "0.0.0.0"));
    assert_false(pd_audit_address_is_local("127.0.0.1", "254.0.0.0"));
    assert_false(pd_audit_address_is_local("::1", "ffff:ffff:ffff:ffff::"));
    assert_false(pd_audit_address_is_local("::", "::"));
    assert_false(pd_audit_address_is_local("127.0.0.1", NULL));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_local_addresses),
        cmocka_unit_test(test_audit_network_addresses),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
