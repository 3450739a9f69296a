/*
 * Unit tests for restore's extractor: a malicious tar (absolute paths, "..",
 * links escaping the target) is refused with PD_ECORRUPT naming the entry,
 * and nothing is written outside the target.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <cmocka.h>

#include "common/mem.h"
#include "restore/restore.h"

static char top[64], target[128], outside[128];

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
setup(void **state)
{
    (void)state;
    snprintf(top, sizeof(top), "/tmp/pd-extract-XXXXXX");
    if (!mkdtemp(top))
        return -1;
    snprintf(target, sizeof(target), "%s/target", top);
    snprintf(outside, sizeof(outside), "%s/outside", top);
    return mkdir(target, 0700);
}

static int
teardown(void **state)
{
    (void)state;
    return nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct entry {
    const char *name;
    int type; /* AE_IFREG, AE_IFLNK, or 0 for a hard link */
    const char *link;
} entry;

/* A tar in memory holding entries (regular files contain "data"). */
static size_t
make_tar(unsigned char *buf, size_t cap, const entry *e, size_t n)
{
    struct archive *a = archive_write_new();
    size_t used = 0;

    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_memory(a, buf, cap, &used), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, e[i].name);
        archive_entry_set_perm(ae, 0600);
        if (e[i].type == AE_IFLNK) {
            archive_entry_set_filetype(ae, AE_IFLNK);
            archive_entry_set_symlink(ae, e[i].link);
        } else if (e[i].type == 0) {
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_hardlink(ae, e[i].link);
        } else {
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_size(ae, 4);
        }
        assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
        if (e[i].type == AE_IFREG)
            assert_int_equal(archive_write_data(a, "data", 4), 4);
        archive_entry_free(ae);
    }
    archive_write_close(a);
    archive_write_free(a);
    return used;
}

static int
extract(const entry *e, size_t n, pd_err *err)
{
    static unsigned char buf[64 * 1024];
    size_t len = make_tar(buf, sizeof(buf), e, n);
    pd_stage *x = pd_restore_extractor_new("test.tar", target);
    int rc = pd_stage_write(x, buf, len, err);

    if (rc == 0)
        rc = pd_stage_finish(x, err);
    pd_stage_free(x);
    return rc;
}

static bool
exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void
test_extract_good_tar(void **state)
{
    const entry e[] = {{"PG_VERSION", AE_IFREG, NULL},
                       {"global/pg_control", AE_IFREG, NULL},
                       {"base/1/ok", AE_IFREG, NULL},
                       {"base/1/rel", AE_IFLNK, "ok"},
                       {"pg_tblspc/16385", AE_IFLNK, "/srv/original/location"}};
    pd_err err = PD_ERR_INIT;
    char path[256];
    (void)state;

    if (extract(e, PD_ARRAY_LEN(e), &err) != 0)
        fail_msg("%s", err.msg);
    snprintf(path, sizeof(path), "%s/base/1/ok", target);
    assert_true(exists(path));
    // pg_control is held back until the restore completes.
    snprintf(path, sizeof(path), "%s/global/pg_control", target);
    assert_false(exists(path));
    snprintf(path, sizeof(path), "%s/%s", target, PD_RESTORE_PGCONTROL);
    assert_true(exists(path));
    // The server's tablespace link is not restored; restore makes its own.
    snprintf(path, sizeof(path), "%s/pg_tblspc/16385", target);
    assert_false(exists(path));
}

static void
refused(const entry *e, size_t n, const char *needle)
{
    pd_err err = PD_ERR_INIT;
    char path[256];

    assert_int_equal(extract(e, n, &err), PD_ECORRUPT);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
    assert_false(exists(outside));
    snprintf(path, sizeof(path), "%s/evil", top);
    assert_false(exists(path));
}

static void
test_extract_refuses_dotdot(void **state)
{
    const entry e[] = {{"ok", AE_IFREG, NULL}, {"../outside", AE_IFREG, NULL}};
    (void)state;
    refused(e, PD_ARRAY_LEN(e), "\"../outside\"");
}

static void
test_extract_refuses_nested_dotdot(void **state)
{
    const entry e[] = {{"base/../../outside", AE_IFREG, NULL}};
    (void)state;
    refused(e, PD_ARRAY_LEN(e), "outside the target");
}

static void
test_extract_refuses_absolute(void **state)
{
    char abs[256];
    (void)state;
    snprintf(abs, sizeof(abs), "%s", outside);
    const entry e[] = {{abs, AE_IFREG, NULL}};
    refused(e, PD_ARRAY_LEN(e), "outside the target");
}

static void
test_extract_refuses_escaping_symlinks(void **state)
{
    const entry abs_link[] = {{"evil", AE_IFLNK, "/etc"}};
    const entry rel_link[] = {{"base/evil", AE_IFLNK, "../../outside"}};
    (void)state;
    refused(abs_link, PD_ARRAY_LEN(abs_link), "pointing outside");
    refused(rel_link, PD_ARRAY_LEN(rel_link), "pointing outside");
}

static void
test_extract_refuses_write_through_symlink(void **state)
{
    (void)state;
    // A link inside the tree to the outside (refused), then a file through it.
    const entry e[] = {{"sub", AE_IFLNK, "../../"}, {"sub/outside", AE_IFREG, NULL}};
    refused(e, PD_ARRAY_LEN(e), "pointing outside");
}

static void
test_extract_refuses_escaping_hardlink(void **state)
{
    const entry e[] = {{"hl", 0, "../outside"}};
    (void)state;
    refused(e, PD_ARRAY_LEN(e), "pointing outside");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_extract_good_tar, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extract_refuses_dotdot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extract_refuses_nested_dotdot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extract_refuses_absolute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extract_refuses_escaping_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extract_refuses_write_through_symlink, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_extract_refuses_escaping_hardlink, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
