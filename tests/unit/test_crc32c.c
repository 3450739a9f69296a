/* Unit tests for common/crc32c: the standard check value and chunking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/crc32c.h"

static void
test_crc32c_check_value(void **state)
{
    (void)state;
    // The catalogue check value of CRC-32C over "123456789".
    assert_int_equal(pd_crc32c_final(pd_crc32c_update(PD_CRC32C_INIT, "123456789", 9)),
                     0xE3069283u);
    assert_int_equal(pd_crc32c_final(pd_crc32c_update(PD_CRC32C_INIT, "", 0)), 0);
}

static void
test_crc32c_chunking_does_not_matter(void **state)
{
    unsigned char buf[1000];
    (void)state;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    uint32_t whole = pd_crc32c_update(PD_CRC32C_INIT, buf, sizeof(buf));
    uint32_t parts = PD_CRC32C_INIT;
    for (size_t off = 0; off < sizeof(buf); off += 13)
        parts = pd_crc32c_update(parts, buf + off, sizeof(buf) - off < 13 ? sizeof(buf) - off : 13);
    assert_int_equal(whole, parts);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_check_value),
        cmocka_unit_test(test_crc32c_chunking_does_not_matter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
