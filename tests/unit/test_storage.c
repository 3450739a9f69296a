/*
 * Unit tests for storage/: the interface and the posix driver, each test in
 * its own directory under /tmp. Covers the commit invariants of posix.c
 * (numbers in test comments refer to its list), modes under any umask,
 * path checks, listing, and the messages of a full disk, a read-only file
 * system and a permission problem. Those last three need a small tmpfs or a
 * changed fsuid, so they run as root and are skipped elsewhere.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/mem.h"
#include "storage/storage.h"

typedef struct fixture {
    char dir[64];  /* the repository */
    char mnt[128]; /* a tmpfs mount point inside it, when mounted */
    bool mounted;
    pd_storage *st;
} fixture;

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int
setup(void **state)
{
    fixture *f = pd_calloc(1, sizeof(*f));
    pd_err err = PD_ERR_INIT;

    snprintf(f->dir, sizeof(f->dir), "/tmp/pgdrill-test-storage-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    if (pd_storage_open(&f->st, f->dir, &err) < 0)
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture *f = *state;

    pd_storage_free(f->st);
    if (f->mounted && umount2(f->mnt, MNT_DETACH) < 0)
        fprintf(stderr, "could not unmount %s: %s\n", f->mnt, strerror(errno));
    chmod(f->dir, 0700);
    // FTW_MOUNT: never descend into a tmpfs that failed to unmount.
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    pd_free(f);
    return 0;
}

static void
put_opts(pd_storage *st, const char *path, const char *data, const pd_writer_opts *opts)
{
    pd_writer *w = NULL;
    pd_err err = PD_ERR_INIT;

    assert_int_equal(pd_storage_open_write(&w, st, path, opts, &err), 0);
    assert_int_equal(pd_writer_write(w, data, strlen(data), &err), 0);
    assert_int_equal(pd_writer_commit(w, &err), 0);
    pd_writer_free(w);
}

static void
put(pd_storage *st, const char *path, const char *data)
{
    put_opts(st, path, data, NULL);
}

/* The object's content as a string (the caller frees it). */
static char *
get(pd_storage *st, const char *path)
{
    pd_err err = PD_ERR_INIT;
    char *buf = NULL;
    size_t len = 0;

    assert_int_equal(pd_storage_read_all(st, path, 1 << 20, &buf, &len, &err), 0);
    assert_int_equal(strlen(buf), len);
    return buf;
}

/* Entries of a directory in the file system, dot files included. */
static int
raw_count(const char *dir)
{
    struct dirent *de;
    DIR *d = opendir(dir);
    int n = 0;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static const char *
raw(const fixture *f, const char *rel)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];

    snprintf(p, sizeof(buf[0]), "%s/%s", f->dir, rel);
    return p;
}

static mode_t
raw_mode(const char *path)
{
    struct stat sb;

    assert_int_equal(stat(path, &sb), 0);
    return sb.st_mode & 07777;
}

static void
test_storage_write_commit_read_back(void **state)
{
    fixture *f = *state;
    pd_reader *r = NULL;
    pd_err err = PD_ERR_INIT;
    char buf[64], *s;
    size_t n;

    put(f->st, "main/backups/20261124T020000Z/base.tar", "hello, repository");
    s = get(f->st, "main/backups/20261124T020000Z/base.tar");
    assert_string_equal(s, "hello, repository");
    pd_free(s);

    assert_int_equal(
        pd_storage_open_read(&r, f->st, "main/backups/20261124T020000Z/base.tar", &err), 0);
    assert_int_equal(pd_reader_read(r, buf, 5, &n, &err), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(pd_reader_read(r, buf, sizeof(buf), &n, &err), 0);
    assert_int_equal(n, 12);
    assert_int_equal(pd_reader_read(r, buf, sizeof(buf), &n, &err), 0);
    assert_int_equal(n, 0); // the end
    pd_reader_free(r);

    // Replacing is the default, and an empty object is an object.
    put(f->st, "main/backups/20261124T020000Z/base.tar", "");
    s = get(f->st, "main/backups/20261124T020000Z/base.tar");
    assert_string_equal(s, "");
    pd_free(s);
    assert_string_equal(pd_storage_repo(f->st), f->dir);
}

/* Invariants 2 and 5: before commit only a temporary file exists. */
static void
test_storage_nothing_visible_before_commit(void **state)
{
    fixture *f = *state;
    pd_writer *w = NULL;
    pd_storage_entry e;
    pd_reader *r = NULL;
    pd_err err = PD_ERR_INIT;
    struct dirent *de;
    DIR *d;
    int temps = 0;

    assert_int_equal(pd_storage_open_write(&w, f->st, "main/repo.json", NULL, &err), 0);
    assert_int_equal(pd_writer_write(w, "{}", 2, &err), 0);
    assert_int_equal(pd_storage_stat(f->st, "main/repo.json", &e, &err), PD_ENOTFOUND);
    assert_int_equal(pd_storage_open_read(&r, f->st, "main/repo.json", &err), PD_ENOTFOUND);
    assert_null(r);
    assert_int_equal(access(raw(f, "main/repo.json"), F_OK), -1);

    d = opendir(raw(f, "main"));
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            assert_int_equal(strncmp(de->d_name, ".repo.json.tmp.", 15), 0);
            assert_int_equal(strlen(de->d_name), 15 + 16);
            temps++;
        }
    }
    closedir(d);
    assert_int_equal(temps, 1);

    assert_int_equal(pd_writer_commit(w, &err), 0);
    pd_writer_free(w);
    assert_int_equal(pd_storage_stat(f->st, "main/repo.json", &e, &err), 0);
    assert_int_equal(e.size, 2);
    assert_int_equal(raw_count(raw(f, "main")), 1); // the temporary file is gone
}

/* Invariant 2: a writer freed without commit leaves no trace. */
static void
test_storage_abandoned_writer_leaves_nothing(void **state)
{
    fixture *f = *state;
    pd_writer *w = NULL;
    pd_err err = PD_ERR_INIT;

    assert_int_equal(pd_storage_open_write(&w, f->st, "main/backups/X/base.tar", NULL, &err), 0);
    assert_int_equal(pd_writer_write(w, "partial", 7, &err), 0);
    pd_writer_free(w);
    assert_int_equal(raw_count(raw(f, "main/backups/X")), 0);

    // Also with nothing written, and with an existing object at the path.
    put(f->st, "main/backups/X/base.tar", "committed");
    assert_int_equal(pd_storage_open_write(&w, f->st, "main/backups/X/base.tar", NULL, &err), 0);
    assert_int_equal(pd_writer_write(w, "replacement", 11, &err), 0);
    pd_writer_free(w);
    char *s = get(f->st, "main/backups/X/base.tar");
    assert_string_equal(s, "committed");
    pd_free(s);
    assert_int_equal(raw_count(raw(f, "main/backups/X")), 1);
    pd_writer_free(NULL);
}

static void
test_storage_modes_ignore_umask(void **state)
{
    fixture *f = *state;
    mode_t old = umask(0);

    put(f->st, "a/b/c", "x");
    assert_int_equal(raw_mode(raw(f, "a")), 0700);
    assert_int_equal(raw_mode(raw(f, "a/b")), 0700);
    assert_int_equal(raw_mode(raw(f, "a/b/c")), 0600);

    // A umask taking the owner's bits does not weaken them either.
    umask(0277);
    put(f->st, "d/e", "x");
    umask(old);
    assert_int_equal(raw_mode(raw(f, "d")), 0700);
    assert_int_equal(raw_mode(raw(f, "d/e")), 0600);
}

static uid_t
raw_owner(const char *path, gid_t *gid)
{
    struct stat sb;

    assert_int_equal(stat(path, &sb), 0);
    *gid = sb.st_gid;
    return sb.st_uid;
}

/*
 * Root writing into another user's repository (a drill as root, the server
 * user's repository) gives new directories and objects to the repository's
 * owner, so that user can still list and read them; in root's own
 * repository they stay root's.
 */
static void
test_storage_root_gives_new_entries_to_the_repository_owner(void **state)
{
    fixture *f = *state;
    pd_storage *st = NULL;
    pd_err err = PD_ERR_INIT;
    gid_t gid;

    if (geteuid() != 0)
        skip(); // only root can create files for another user
    put(f->st, "mine/obj", "x");
    assert_int_equal(raw_owner(raw(f, "mine"), &gid), 0);
    assert_int_equal(raw_owner(raw(f, "mine/obj"), &gid), 0);

    assert_int_equal(chown(f->dir, 65534, 65534), 0);
    assert_int_equal(pd_storage_open(&st, f->dir, &err), 0);
    put(st, "drills/new/report.json", "{}");
    put(st, "mine/second", "y");
    for (int i = 0; i < 3; i++) {
        const char *p =
            raw(f, (const char *[]){"drills", "drills/new", "drills/new/report.json"}[i]);
        assert_int_equal(raw_owner(p, &gid), 65534);
        assert_int_equal(gid, 65534);
    }
    assert_int_equal(raw_owner(raw(f, "mine/second"), &gid), 65534);
    assert_int_equal(raw_mode(raw(f, "drills/new/report.json")), 0600);
    // What existed stays as it was: only what root creates changes hands.
    assert_int_equal(raw_owner(raw(f, "mine"), &gid), 0);
    pd_storage_free(st);
}

/* Invariant 8: no_overwrite refuses an existing object and keeps it whole. */
static void
test_storage_no_overwrite_keeps_original(void **state)
{
    fixture *f = *state;
    pd_writer_opts opts = PD_WRITER_OPTS_INIT;
    pd_writer *w = NULL;
    pd_err err = PD_ERR_INIT;
    char want[256], *s;

    opts.no_overwrite = true;
    put_opts(f->st, "main/wal/0000000100000000/000000010000000000000001", "first", &opts);

    assert_int_equal(pd_storage_open_write(&w, f->st,
                                           "main/wal/0000000100000000/000000010000000000000001",
                                           &opts, &err),
                     0);
    assert_int_equal(pd_writer_write(w, "second", 6, &err), 0);
    assert_int_equal(pd_writer_commit(w, &err), PD_EEXIST);
    snprintf(want, sizeof(want),
             "cannot store \"main/wal/0000000100000000/000000010000000000000001\" in repository "
             "\"%s\": the object exists already",
             f->dir);
    assert_string_equal(err.msg, want);
    // Sticky: a second commit repeats the failure.
    assert_int_equal(pd_writer_commit(w, &err), PD_EEXIST);
    pd_writer_free(w);

    s = get(f->st, "main/wal/0000000100000000/000000010000000000000001");
    assert_string_equal(s, "first");
    pd_free(s);
    assert_int_equal(raw_count(raw(f, "main/wal/0000000100000000")), 1); // no temporary left
}

typedef struct seen {
    char paths[16][64];
    uint64_t sizes[16];
    int64_t mtimes[16];
    int n;
    int stop_after; /* 0: never */
} seen;

static int
collect(void *payload, const pd_storage_entry *e, pd_err *err)
{
    seen *s = payload;

    if (s->stop_after && s->n == s->stop_after)
        return pd_err_set(err, PD_EFAIL, "stopped");
    assert_true(s->n < 16);
    snprintf(s->paths[s->n], sizeof(s->paths[0]), "%s", e->path);
    s->sizes[s->n] = e->size;
    s->mtimes[s->n] = e->mtime;
    s->n++;
    return 0;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void
list(pd_storage *st, const char *prefix, seen *s)
{
    pd_err err = PD_ERR_INIT;

    memset(s, 0, sizeof(*s));
    assert_int_equal(pd_storage_list(st, prefix, collect, s, &err), 0);
    qsort(s->paths, s->n, sizeof(s->paths[0]), cmp_str);
}

static void
test_storage_list_recursive_skips_temps(void **state)
{
    fixture *f = *state;
    pd_writer *w = NULL;
    pd_err err = PD_ERR_INIT;
    seen s;
    int fd;

    put(f->st, "a/1", "1");
    put(f->st, "a/b/2", "22");
    put(f->st, "a/b/c/3", "333");
    put(f->st, "x/4", "4444");
    // An unfinished writer and a stale temporary file of a crashed one.
    assert_int_equal(pd_storage_open_write(&w, f->st, "a/b/5", NULL, &err), 0);
    fd = open(raw(f, "a/.6.tmp.0123456789abcdef"), O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);

    list(f->st, "a", &s);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.paths[0], "a/1");
    assert_string_equal(s.paths[1], "a/b/2");
    assert_string_equal(s.paths[2], "a/b/c/3");

    list(f->st, "", &s);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.paths[3], "x/4");
    for (int i = 0; i < s.n; i++)
        assert_true(s.mtimes[i] > time(NULL) - 60 && s.mtimes[i] <= time(NULL) + 1);

    list(f->st, "a/b/c", &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.sizes[0], 3);

    // A missing prefix, or an object named as a prefix, lists nothing.
    list(f->st, "nope/nothing", &s);
    assert_int_equal(s.n, 0);
    list(f->st, "a/1", &s);
    assert_int_equal(s.n, 0);

    // Still unlisted after commit's rename: only the temporary was hidden.
    assert_int_equal(pd_writer_commit(w, &err), 0);
    pd_writer_free(w);
    list(f->st, "a/b", &s);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.paths[2], "a/b/c/3");
}

static void
test_storage_list_callback_stops(void **state)
{
    fixture *f = *state;
    pd_err err = PD_ERR_INIT;
    seen s;

    put(f->st, "a/1", "1");
    put(f->st, "a/2", "2");
    put(f->st, "a/3", "3");
    memset(&s, 0, sizeof(s));
    s.stop_after = 2;
    assert_int_equal(pd_storage_list(f->st, "a", collect, &s, &err), PD_EFAIL);
    assert_string_equal(err.msg, "stopped");
    assert_int_equal(s.n, 2);
}

static void
test_storage_stat_and_exists(void **state)
{
    fixture *f = *state;
    pd_storage_entry e;
    pd_err err = PD_ERR_INIT;
    bool exists = true;

    put(f->st, "main/backups/X/manifest.json", "{\"a\":1}");
    assert_int_equal(pd_storage_stat(f->st, "main/backups/X/manifest.json", &e, &err), 0);
    assert_int_equal(e.size, 7);
    assert_string_equal(e.path, "main/backups/X/manifest.json");
    assert_true(e.mtime > time(NULL) - 60);

    assert_int_equal(pd_storage_exists(f->st, "main/backups/X/manifest.json", &exists, &err), 0);
    assert_true(exists);
    assert_int_equal(pd_storage_exists(f->st, "main/backups/Y/manifest.json", &exists, &err), 0);
    assert_false(exists);
    // A directory is a prefix, not an object.
    assert_int_equal(pd_storage_stat(f->st, "main/backups", &e, &err), PD_ENOTFOUND);
    assert_int_equal(pd_storage_exists(f->st, "main/backups", &exists, &err), 0);
    assert_false(exists);
    // Errors other than "missing" still fail exists.
    assert_int_equal(pd_storage_exists(f->st, "../x", &exists, &err), PD_ECONFIG);
}

static void
test_storage_missing_object_not_found(void **state)
{
    fixture *f = *state;
    pd_reader *r = NULL;
    pd_storage_entry e;
    pd_err err = PD_ERR_INIT;
    char want[256];

    snprintf(want, sizeof(want),
             "object \"main/backups/X/manifest.json\" does not exist in repository \"%s\"", f->dir);
    assert_int_equal(pd_storage_open_read(&r, f->st, "main/backups/X/manifest.json", &err),
                     PD_ENOTFOUND);
    assert_null(r);
    assert_string_equal(err.msg, want);

    pd_err_clear(&err);
    assert_int_equal(pd_storage_stat(f->st, "main/backups/X/manifest.json", &e, &err),
                     PD_ENOTFOUND);
    assert_string_equal(err.msg, want);

    // Also when part of the path is an object rather than a directory.
    put(f->st, "main/backups/X", "not a directory");
    assert_int_equal(pd_storage_open_read(&r, f->st, "main/backups/X/manifest.json", &err),
                     PD_ENOTFOUND);
    assert_string_equal(err.msg, want);
    // A directory cannot be read as an object.
    assert_int_equal(pd_storage_open_read(&r, f->st, "main/backups", &err), PD_ENOTFOUND);
}

static void
test_storage_remove_missing_ok(void **state)
{
    fixture *f = *state;
    pd_err err = PD_ERR_INIT;
    bool exists = true;

    assert_int_equal(pd_storage_remove(f->st, "no/such/dir/object", &err), 0);
    put(f->st, "main/wal/00000002.history", "h");
    assert_int_equal(pd_storage_remove(f->st, "main/wal/00000001.history", &err), 0);
    assert_int_equal(pd_storage_remove(f->st, "main/wal/00000002.history", &err), 0);
    assert_int_equal(pd_storage_exists(f->st, "main/wal/00000002.history", &exists, &err), 0);
    assert_false(exists);
    assert_int_equal(pd_storage_remove(f->st, "main/wal/00000002.history", &err), 0);

    // A directory is not an object: remove refuses it, naming it.
    assert_int_equal(pd_storage_remove(f->st, "main/wal", &err), PD_EIO);
    assert_non_null(strstr(err.msg, "could not remove \"main/wal\" in repository"));
}

static void
test_storage_remove_prefix(void **state)
{
    fixture *f = *state;
    pd_err err = PD_ERR_INIT;
    char outside[128];
    seen s;
    int fd;

    put(f->st, "main/backups/X/base.tar", "1");
    put(f->st, "main/backups/X/sub/dir/deep", "2");
    put(f->st, "main/backups/Y/base.tar", "3");
    fd = open(raw(f, "main/backups/X/.base.tar.tmp.0000000000000000"), O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    // A symbolic link inside the prefix: the link goes, its target stays.
    snprintf(outside, sizeof(outside), "%s-outside", f->dir);
    fd = open(outside, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(symlink(f->dir, raw(f, "main/backups/X/sub/loop")), 0);
    assert_int_equal(symlink(outside, raw(f, "main/backups/X/link")), 0);

    assert_int_equal(pd_storage_remove_prefix(f->st, "main/backups/X", &err), 0);
    assert_int_equal(access(raw(f, "main/backups/X"), F_OK), -1);
    assert_int_equal(access(outside, F_OK), 0);
    unlink(outside);
    list(f->st, "", &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.paths[0], "main/backups/Y/base.tar");

    assert_int_equal(pd_storage_remove_prefix(f->st, "main/backups/X", &err), 0);
    assert_int_equal(pd_storage_remove_prefix(f->st, "no/such", &err), 0);
    assert_int_equal(pd_storage_remove_prefix(f->st, "", &err), PD_ECONFIG);
}

/* Many at once: across directories, missing ones and missing directories included. */
static void
test_storage_remove_many(void **state)
{
    fixture *f = *state;
    pd_err err = PD_ERR_INIT;
    const char *paths[] = {"main/wal/1/a", "main/wal/1/b", "main/wal/1/gone",
                           "main/wal/2/c", "no/such/dir",  "main/wal/1/d",
                           "top"};
    const char *bad[] = {"main/wal/1/a", "../escape"};
    seen s;

    put(f->st, "main/wal/1/a", "1");
    put(f->st, "main/wal/1/b", "2");
    put(f->st, "main/wal/1/d", "3");
    put(f->st, "main/wal/1/kept", "4");
    put(f->st, "main/wal/2/c", "5");
    put(f->st, "top", "6");
    assert_int_equal(pd_storage_remove_many(f->st, paths, PD_ARRAY_LEN(paths), &err), 0);
    list(f->st, "", &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.paths[0], "main/wal/1/kept");
    assert_int_equal(pd_storage_remove_many(f->st, paths, PD_ARRAY_LEN(paths), &err), 0);
    assert_int_equal(pd_storage_remove_many(f->st, paths, 0, &err), 0);

    // Every path is checked before anything goes.
    put(f->st, "main/wal/1/a", "1");
    assert_int_equal(pd_storage_remove_many(f->st, bad, PD_ARRAY_LEN(bad), &err), PD_ECONFIG);
    list(f->st, "main/wal/1", &s);
    assert_int_equal(s.n, 2);

    // A directory is not an object: refused, naming it, after the others went.
    const char *dir[] = {"main/wal/1/a", "main/wal"};
    assert_int_equal(pd_storage_remove_many(f->st, dir, PD_ARRAY_LEN(dir), &err), PD_EIO);
    assert_non_null(strstr(err.msg, "could not remove \"main/wal\" in repository"));
    list(f->st, "main/wal/1", &s);
    assert_int_equal(s.n, 1);
}

static void
test_storage_bad_paths_refused(void **state)
{
    static const char *const bad[] = {
        "../x", "/x",  "a//b",    "a/./b",      "",     "a/",   "a/..", "..",
        ".",    "./a", ".hidden", "a/.b.tmp.1", "a\\b", "a\nb", "a\tb",
    };
    fixture *f = *state;
    pd_writer *w = NULL;
    pd_reader *r = NULL;
    pd_storage_entry e;
    pd_err err = PD_ERR_INIT;
    char longpath[PD_STORAGE_PATH_MAX + 2], longseg[PD_STORAGE_SEGMENT_MAX + 4];
    seen s;

    for (size_t i = 0; i < PD_ARRAY_LEN(bad); i++) {
        pd_err_clear(&err);
        assert_int_equal(pd_storage_open_write(&w, f->st, bad[i], NULL, &err), PD_ECONFIG);
        assert_null(w);
        assert_int_equal(strncmp(err.msg, "invalid path \"", 14), 0);
        if (strchr(bad[i], '\n') == NULL && strchr(bad[i], '\t') == NULL) {
            char quoted[64];
            snprintf(quoted, sizeof(quoted), "\"%s\"", bad[i]);
            assert_non_null(strstr(err.msg, quoted));
        }
        assert_int_equal(pd_storage_open_read(&r, f->st, bad[i], &err), PD_ECONFIG);
        assert_int_equal(pd_storage_stat(f->st, bad[i], &e, &err), PD_ECONFIG);
        assert_int_equal(pd_storage_remove(f->st, bad[i], &err), PD_ECONFIG);
        assert_int_equal(pd_storage_remove_prefix(f->st, bad[i], &err), PD_ECONFIG);
        if (bad[i][0] != '\0')
            assert_int_equal(pd_storage_list(f->st, bad[i], collect, &s, &err), PD_ECONFIG);
    }
    pd_err_clear(&err);
    assert_int_equal(pd_storage_check_path("../x", &err), PD_ECONFIG);
    assert_string_equal(err.msg,
                        "invalid path \"../x\" in repository: \".\" and \"..\" segments are not "
                        "allowed");

    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    for (size_t i = 100; i < sizeof(longpath) - 1; i += 100)
        longpath[i] = '/';
    assert_int_equal(strlen(longpath), PD_STORAGE_PATH_MAX + 1);
    assert_int_equal(pd_storage_check_path(longpath, &err), PD_ECONFIG);
    longpath[PD_STORAGE_PATH_MAX] = '\0';
    assert_int_equal(pd_storage_check_path(longpath, &err), 0);

    memset(longseg, 'b', sizeof(longseg) - 1);
    longseg[0] = 'x';
    longseg[1] = '/';
    longseg[sizeof(longseg) - 1] = '\0';
    assert_int_equal(pd_storage_check_path(longseg, &err), PD_ECONFIG); // 201 characters
    longseg[sizeof(longseg) - 2] = '\0';
    assert_int_equal(pd_storage_check_path(longseg, &err), 0); // 200 characters
    put(f->st, longseg, "the longest segment still takes a temporary name");

    // Dots inside a segment are fine.
    assert_int_equal(pd_storage_check_path("main/wal/00000002.history", &err), 0);
    assert_int_equal(pd_storage_check_path("a..b/c.", &err), 0);
    // Nothing reached the file system but the one valid object.
    assert_int_equal(raw_count(f->dir), 1);
}

static void
test_storage_read_all_limit(void **state)
{
    fixture *f = *state;
    pd_writer *w = NULL;
    pd_err err = PD_ERR_INIT;
    char data[10000], *buf = NULL;
    size_t len = 0;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 26);
    assert_int_equal(pd_storage_open_write(&w, f->st, "big", NULL, &err), 0);
    assert_int_equal(pd_writer_write(w, data, sizeof(data), &err), 0);
    assert_int_equal(pd_writer_commit(w, &err), 0);
    pd_writer_free(w);

    // Exactly at the limit (past the first growth steps) is fine.
    assert_int_equal(pd_storage_read_all(f->st, "big", sizeof(data), &buf, &len, &err), 0);
    assert_int_equal(len, sizeof(data));
    assert_memory_equal(buf, data, sizeof(data));
    assert_int_equal(buf[len], '\0');
    pd_free(buf);

    // One byte over is damage.
    assert_int_equal(pd_storage_read_all(f->st, "big", sizeof(data) - 1, &buf, &len, &err),
                     PD_ECORRUPT);
    assert_null(buf);
    assert_non_null(strstr(err.msg, "object \"big\" in repository"));
    assert_non_null(strstr(err.msg, "is larger than 9999 bytes"));

    put(f->st, "empty", "");
    assert_int_equal(pd_storage_read_all(f->st, "empty", 0, &buf, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");
    pd_free(buf);
    assert_int_equal(pd_storage_read_all(f->st, "big", 0, &buf, &len, &err), PD_ECORRUPT);
    assert_int_equal(pd_storage_read_all(f->st, "missing", 10, &buf, &len, &err), PD_ENOTFOUND);
    assert_null(buf);
}

static void
sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL), 1);
}

/* The writer sink at the end of a chain; read_to_stage back through a hash. */
static void
test_storage_read_to_stage_hash_matches(void **state)
{
    fixture *f = *state;
    const size_t size = 3 * PD_STORAGE_READ_BUF + 17;
    unsigned char *data = pd_malloc(size), want[32], got[32];
    pd_writer *w = NULL;
    pd_stage *chain;
    pd_err err = PD_ERR_INIT;
    uint64_t bytes = 0;

    assert_int_equal(RAND_bytes(data, (int)size), 1);
    sha256(data, size, want);

    assert_int_equal(pd_storage_open_write(&w, f->st, "main/backups/X/base.tar", NULL, &err), 0);
    chain = pd_stage_hash_new(pd_storage_writer_stage(w));
    for (size_t off = 0, chunk = 1; off < size; off += chunk, chunk = chunk * 3 + 1) {
        if (chunk > size - off)
            chunk = size - off;
        assert_int_equal(pd_stage_write(chain, data + off, chunk, &err), 0);
    }
    assert_int_equal(pd_stage_finish(chain, &err), 0);
    // The sink's finish does not commit: still invisible.
    assert_int_equal(access(raw(f, "main/backups/X/base.tar"), F_OK), -1);
    pd_stage_hash_result(chain, got, &bytes);
    assert_memory_equal(got, want, 32);
    pd_stage_free(chain);
    assert_int_equal(pd_writer_commit(w, &err), 0);
    pd_writer_free(w);

    chain = pd_stage_hash_new(pd_stage_null_new());
    assert_int_equal(pd_storage_read_to_stage(f->st, "main/backups/X/base.tar", chain, &err), 0);
    pd_stage_hash_result(chain, got, &bytes);
    assert_int_equal(bytes, size);
    assert_memory_equal(got, want, 32);
    pd_stage_free(chain);

    chain = pd_stage_null_new();
    assert_int_equal(pd_storage_read_to_stage(f->st, "main/backups/X/missing", chain, &err),
                     PD_ENOTFOUND);
    pd_stage_free(chain);
    pd_free(data);
}

static void
test_storage_open_repository_kinds(void **state)
{
    fixture *f = *state;
    pd_storage *st = (pd_storage *)1;
    pd_err err = PD_ERR_INIT;
    char path[128];
    int fd;

    assert_int_equal(pd_storage_open(&st, "backup/repo", &err), PD_ECONFIG);
    assert_null(st);
    assert_string_equal(err.msg, "bad repository \"backup/repo\": it is neither an absolute path "
                                 "nor an s3:// URL");
    assert_int_equal(pd_storage_open(&st, "", &err), PD_ECONFIG);
    assert_int_equal(pd_storage_open(&st, "backup/repo", NULL), PD_ECONFIG); // err is optional

    // s3:// goes to the s3 driver, which wants credentials before anything.
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_int_equal(pd_storage_open(&st, "s3://bucket/prefix", &err), PD_ECONFIG);
    assert_null(st);
    assert_string_equal(err.msg, "no S3 credentials for repository \"s3://bucket/prefix\"");
    assert_int_equal(pd_storage_open(&st, "s3://b/prefix", &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "a bucket name has 3 to 63 characters"));

    snprintf(path, sizeof(path), "%s/missing", f->dir);
    assert_int_equal(pd_storage_open(&st, path, &err), PD_ENOTFOUND);
    assert_non_null(strstr(err.msg, "cannot open repository \""));
    assert_non_null(strstr(err.msg, "no such file or directory"));

    snprintf(path, sizeof(path), "%s/file", f->dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(pd_storage_open(&st, path, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "is not a directory"));

    // A trailing slash names the same repository; messages use it as written.
    snprintf(path, sizeof(path), "%s/", f->dir);
    assert_int_equal(pd_storage_open(&st, path, &err), 0);
    assert_string_equal(pd_storage_repo(st), path);
    char *s = NULL;
    put(f->st, "x", "same");
    s = get(st, "x");
    assert_string_equal(s, "same");
    pd_free(s);
    pd_storage_free(st);
    pd_storage_free(NULL);
}

static void
test_storage_free_space(void **state)
{
    fixture *f = *state;
    pd_err err = PD_ERR_INIT;
    uint64_t bytes = 0;

    assert_int_equal(pd_storage_free_space(f->st, &bytes, &err), 0);
    assert_true(bytes > 0);
}

/* Mounts a tmpfs of 64 KiB at <repo>/mnt and opens it as a repository. */
static bool
mount_tmpfs(fixture *f, unsigned long flags, pd_storage **st)
{
    pd_err err = PD_ERR_INIT;

    if (geteuid() != 0)
        return false;
    snprintf(f->mnt, sizeof(f->mnt), "%s/mnt", f->dir);
    if (mkdir(f->mnt, 0700) < 0)
        return false;
    if (mount("tmpfs", f->mnt, "tmpfs", flags, "size=64k,mode=0700") < 0)
        return false;
    f->mounted = true;
    return pd_storage_open(st, f->mnt, &err) == 0;
}

/* A full disk: the message says so, the object fails for good, nothing stays. */
static void
test_storage_full_disk_message(void **state)
{
    fixture *f = *state;
    pd_storage *st = NULL;
    pd_writer *w = NULL;
    pd_err err = PD_ERR_INIT, again = PD_ERR_INIT;
    static char chunk[16384];
    char want[512], line[2048];
    int rc = 0;

    if (!mount_tmpfs(f, 0, &st)) {
        pd_storage_free(st);
        skip(); // needs root and tmpfs
    }
    assert_int_equal(pd_storage_open_write(&w, st, "main/backups/X/base.tar", NULL, &err), 0);
    for (int i = 0; i < 64 && rc == 0; i++) // 1 MiB into 64 KiB
        rc = pd_writer_write(w, chunk, sizeof(chunk), &err);
    assert_int_equal(rc, PD_EIO);
    snprintf(want, sizeof(want),
             "repository \"%s\" is full: could not write \"main/backups/X/base.tar\": no space "
             "left on device; free space or run pgdrill expire",
             f->mnt);
    pd_err_format(&err, line, sizeof(line));
    assert_string_equal(line, want);
    assert_int_equal(err.sys_errno, ENOSPC);

    // Sticky: neither write nor commit pretends otherwise.
    assert_int_equal(pd_writer_write(w, "x", 1, &again), PD_EIO);
    assert_string_equal(again.msg, err.msg);
    assert_int_equal(pd_writer_commit(w, &again), PD_EIO);
    assert_string_equal(again.msg, err.msg);
    pd_writer_free(w);
    assert_int_equal(raw_count(raw(f, "mnt/main/backups/X")), 0);

    // The space came back with the temporary file.
    put(st, "main/backups/X/small", "fits");
    pd_storage_free(st);
}

static void
test_storage_read_only_message(void **state)
{
    fixture *f = *state;
    pd_storage *st = NULL;
    pd_writer *w = NULL;
    pd_err err = PD_ERR_INIT;
    char want[512], line[2048];

    if (!mount_tmpfs(f, MS_RDONLY, &st)) {
        pd_storage_free(st);
        skip(); // needs root and tmpfs
    }
    assert_int_equal(pd_storage_open_write(&w, st, "main/repo.json", NULL, &err), PD_EIO);
    assert_null(w);
    snprintf(want, sizeof(want),
             "could not create directory \"main\" in repository \"%s\": read-only file system; "
             "remount the file system read-write or point repo at a writable directory",
             f->mnt);
    pd_err_format(&err, line, sizeof(line));
    assert_string_equal(line, want);

    assert_int_equal(pd_storage_open_write(&w, st, "repo.json", NULL, &err), PD_EIO);
    snprintf(want, sizeof(want),
             "could not create \"repo.json\" in repository \"%s\": read-only file system", f->mnt);
    assert_string_equal(err.msg, want);
    pd_storage_free(st);
}

static void
test_storage_permission_denied_message(void **state)
{
    fixture *f = *state;
    pd_writer *w = NULL;
    pd_err err = PD_ERR_INIT;
    char want[512], line[2048];
    int rc;

    assert_int_equal(chmod(f->dir, 0500), 0);
    // Root passes permission checks; a changed fsuid drops that for a moment.
    if (geteuid() == 0)
        setfsuid(65534);
    rc = pd_storage_open_write(&w, f->st, "main/repo.json", NULL, &err);
    if (geteuid() == 0)
        setfsuid(0);
    chmod(f->dir, 0700);
    if (rc == 0) {
        pd_writer_free(w);
        skip(); // permission checks do not apply here
    }
    assert_int_equal(rc, PD_EIO);
    snprintf(want, sizeof(want),
             "could not create directory \"main\" in repository \"%s\": permission denied; check "
             "the owner and mode of the repository directory",
             f->dir);
    pd_err_format(&err, line, sizeof(line));
    assert_string_equal(line, want);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_storage_write_commit_read_back),
        T(test_storage_nothing_visible_before_commit),
        T(test_storage_abandoned_writer_leaves_nothing),
        T(test_storage_modes_ignore_umask),
        T(test_storage_root_gives_new_entries_to_the_repository_owner),
        T(test_storage_no_overwrite_keeps_original),
        T(test_storage_list_recursive_skips_temps),
        T(test_storage_list_callback_stops),
        T(test_storage_stat_and_exists),
        T(test_storage_missing_object_not_found),
        T(test_storage_remove_missing_ok),
        T(test_storage_remove_prefix),
        T(test_storage_remove_many),
        T(test_storage_bad_paths_refused),
        T(test_storage_read_all_limit),
        T(test_storage_read_to_stage_hash_matches),
        T(test_storage_open_repository_kinds),
        T(test_storage_free_space),
        T(test_storage_full_disk_message),
        T(test_storage_read_only_message),
        T(test_storage_permission_denied_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
