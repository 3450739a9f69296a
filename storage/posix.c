/*
 * The posix storage driver: a repository is a local directory, opened once;
 * every object is reached relative to that directory's descriptor (openat
 * and friends), so paths never leave this file and a changed working
 * directory cannot redirect us.
 *
 * Crash safety. An object is written as a temporary file next to its final
 * name and published by rename. What a crash (power loss, kill -9) at each
 * step leaves behind:
 *
 *  1. Creating missing parent directories (mode 0700): each new directory's
 *     parent is fsync'd before anything is written below it. A crash leaves
 *     at most empty directories, which hold no objects and list nothing.
 *  2. Writing: bytes go only to ".<name>.tmp.<16 hex digits>" (O_EXCL, 0600)
 *     in the object's directory. A crash leaves a temporary file: never
 *     listed, never readable through this interface (no path segment may
 *     start with '.'), removed with its prefix by remove_prefix.
 *  3. Commit, fsync of the temporary file: the data is durable before any
 *     name points at it, so a crash after the rename can never show a
 *     truncated or zero-length object under its final name.
 *  4. Commit, close: checked, because some file systems (NFS) report write
 *     errors only there.
 *  5. Commit, rename: atomic. A crash before it leaves the previous object
 *     (or nothing) at the path; after it, the new whole object.
 *  6. Commit, fsync of the directory: commit succeeds only once the new name
 *     is durable, so a caller that commits manifest.json after the objects it
 *     lists never has a durable manifest naming objects that may vanish. If
 *     this fsync fails the commit fails, although the object, complete by
 *     (3), may stay visible.
 *  7. A failed fsync is never retried: the kernel may have dropped the dirty
 *     pages and marked them clean, so a second fsync could succeed with the
 *     data lost (PostgreSQL's "fsyncgate"). The object is failed for good and
 *     its temporary file removed when the writer is freed.
 *  8. no_overwrite: renameat2(RENAME_NOREPLACE), or link + unlink where the
 *     file system lacks it, checks and publishes in one atomic step, so of
 *     two writers of one path exactly one wins. A crash between link and
 *     unlink leaves a second, temporary name for the committed object, which
 *     is harmless (see 2).
 *  9. Remove: unlink, then fsync of the directory, so success means the
 *     object stays gone after a crash. remove_many unlinks a directory's
 *     objects, then fsyncs it once; a crash midway may bring back any of
 *     them. remove_prefix unlinks depth first and fsyncs the prefix's parent
 *     last; a crash midway leaves part of the prefix, so callers remove
 *     their commit marker (manifest.json) first.
 *
 * Modes are 0600 for files and 0700 for directories whatever the umask, set
 * by fchmod after creation: a repository holds backups of the whole database.
 * Root writing into a repository another user owns (a drill as root writing
 * its report into the server user's repository) gives each directory and
 * temporary file it creates to that owner before anything is published, so
 * the owner's list, status and expire can still read everything.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "common/mem.h"
#include "storage/storage.h"

#define FILE_MODE 0600
#define DIR_MODE  0700

/* list and remove_prefix refuse to go deeper (a symbolic link loop). */
#define MAX_DEPTH 64

/* Sets the hint of err's message and returns code (also when err is NULL). */
static int
hinted(pd_err *err, int code, const char *hint)
{
    pd_err_hint(err, "%s", hint);
    return code;
}

typedef struct posix_storage {
    pd_storage base;
    int rootfd; /* the repository directory */
    bool give;  /* root in another user's repository: chown what we create */
    uid_t uid;  /* the repository directory's owner, when give */
    gid_t gid;
} posix_storage;

typedef struct posix_reader {
    pd_reader base;
    int fd;
} posix_reader;

typedef struct posix_writer {
    pd_writer base;
    int dirfd;     /* the object's directory */
    int fd;        /* the temporary file, -1 once closed */
    char *name;    /* the object's name in dirfd */
    char *tmpname; /* the temporary file's name in dirfd, NULL once gone */
    off_t written; /* bytes written */
    off_t flushed; /* bytes handed to writeback early (see posix_write) */
} posix_writer;

/* Bytes written between two early writeback requests. */
#define WRITEBACK_AFTER (8 * 1024 * 1024)

static int
rootfd(const pd_storage *st)
{
    return ((const posix_storage *)st)->rootfd;
}

/*
 * The message for a failed system call on path (repository-relative), with
 * a remedy for the causes a user can fix: a full disk, permissions, a
 * read-only mount.
 */
static int
sys_fail(pd_err *err, const pd_storage *st, const char *verb, const char *path, int errnum)
{
    errno = errnum;
    switch (errnum) {
    case ENOSPC:
    case EDQUOT:
        pd_err_sys(err, PD_EIO, "repository \"%s\" is full: could not %s \"%s\"", st->repo, verb,
                   path);
        return hinted(err, PD_EIO, "free space or run pgdrill expire");
    case EACCES:
    case EPERM:
        pd_err_sys(err, PD_EIO, "could not %s \"%s\" in repository \"%s\"", verb, path, st->repo);
        return hinted(err, PD_EIO, "check the owner and mode of the repository directory");
    case EROFS:
        pd_err_sys(err, PD_EIO, "could not %s \"%s\" in repository \"%s\"", verb, path, st->repo);
        return hinted(err, PD_EIO,
                      "remount the file system read-write or point repo at a writable "
                      "directory");
    default:
        return pd_err_sys(err, PD_EIO, "could not %s \"%s\" in repository \"%s\"", verb, path,
                          st->repo);
    }
}

static void
close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* What root creates in another user's repository becomes that user's (see the top). */
static int
give_to_owner(const pd_storage *st, int fd)
{
    const posix_storage *ps = (const posix_storage *)st;

    return ps->give ? fchown(fd, ps->uid, ps->gid) : 0;
}

/*
 * Opens the directory holding path's last segment, creating missing ones
 * (mode 0700, parent fsync'd) when create is set. *dirfd is owned by the
 * caller; *name points into path. Without create, a missing directory is
 * PD_ENOTFOUND with no message set (callers decide what missing means).
 */
static int
open_parent(pd_storage *st, const char *path, bool create, int *dirfd, const char **name,
            pd_err *err)
{
    char shown[PD_STORAGE_PATH_MAX + 1]; // the directory reached so far, for messages
    const char *seg = path, *slash;
    int cur, next = -1, e;

    *dirfd = -1;
    if ((cur = fcntl(rootfd(st), F_DUPFD_CLOEXEC, 0)) < 0)
        return sys_fail(err, st, "open", path, errno);
    while ((slash = strchr(seg, '/')) != NULL) {
        size_t seglen = (size_t)(slash - seg), dirlen = (size_t)(slash - path);
        char segname[PD_STORAGE_SEGMENT_MAX + 1];
        bool created = false;

        PD_ASSERT(seglen <= PD_STORAGE_SEGMENT_MAX && dirlen <= PD_STORAGE_PATH_MAX);
        memcpy(segname, seg, seglen);
        segname[seglen] = '\0';
        memcpy(shown, path, dirlen);
        shown[dirlen] = '\0';

        next = openat(cur, segname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && create) {
            if (mkdirat(cur, segname, DIR_MODE) == 0)
                created = true;
            else if (errno != EEXIST) // EEXIST: another writer was quicker
                goto fail;
            next = openat(cur, segname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (next < 0) {
            if (!create && (errno == ENOENT || errno == ENOTDIR)) {
                close(cur);
                return PD_ENOTFOUND;
            }
            goto fail;
        }
        // The umask may have taken bits from DIR_MODE; and the new entry must
        // be durable before anything below it counts as committed (1).
        if (created &&
            (fchmod(next, DIR_MODE) < 0 || give_to_owner(st, next) < 0 || fsync(cur) < 0))
            goto fail;
        close(cur);
        cur = next;
        next = -1;
        seg = slash + 1;
    }
    *dirfd = cur;
    *name = seg;
    return 0;
fail:
    e = errno;
    if (next >= 0)
        close(next);
    close(cur);
    return sys_fail(err, st, create ? "create directory" : "open directory", shown, e);
}

/* ---- reading ---- */

static int
posix_read(pd_reader *r, void *buf, size_t len, size_t *nread, pd_err *err)
{
    posix_reader *pr = (posix_reader *)r;
    ssize_t n;

    do
        n = read(pr->fd, buf, len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return sys_fail(err, r->st, "read", r->path, errno);
    *nread = (size_t)n;
    return 0;
}

static void
posix_reader_free(pd_reader *r)
{
    close_fd(&((posix_reader *)r)->fd);
}

static const pd_reader_ops posix_reader_ops = {posix_read, posix_reader_free};

static int
posix_open_read(pd_reader **out, pd_storage *st, const char *path, pd_err *err)
{
    struct stat sb;
    int fd;

    // O_NONBLOCK: a FIFO planted in the repository must not hang us; it has
    // no effect on regular files.
    fd = openat(rootfd(st), path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return pd_storage_err_notfound(err, st, path);
        return sys_fail(err, st, "read", path, errno);
    }
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        return sys_fail(err, st, "read", path, e);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        if (S_ISDIR(sb.st_mode)) // a directory is a prefix, not an object
            return pd_storage_err_notfound(err, st, path);
        return pd_err_set(err, PD_EIO,
                          "cannot read \"%s\" in repository \"%s\": it is not a regular file", path,
                          st->repo);
    }
    posix_reader *pr = pd_calloc(1, sizeof(*pr));
    pd_reader_init(&pr->base, &posix_reader_ops, st, path);
    pr->fd = fd;
    *out = &pr->base;
    return 0;
}

/* ---- writing ---- */

static int
posix_write(pd_writer *w, const void *buf, size_t len, pd_err *err)
{
    posix_writer *pw = (posix_writer *)w;
    const char *p = buf;

    // write() may take fewer bytes than asked (signals, limits): loop.
    while (len > 0) {
        ssize_t n = write(pw->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return sys_fail(err, w->st, "write", w->path, errno);
        }
        if (n == 0)
            return pd_err_set(err, PD_EIO,
                              "could not write \"%s\" in repository \"%s\": the file system "
                              "accepted no bytes",
                              w->path, w->st->repo);
        p += n;
        len -= (size_t)n;
        pw->written += n;
    }
    // Start writing back what is written so far, without waiting: commit's
    // fsync then finds little left to do, and a large object does not pile
    // up gigabytes of dirty pages (as PostgreSQL's *_flush_after). Only a
    // hint: a failure here is left to fsync, which reports it (3, 7).
    if (pw->written - pw->flushed >= WRITEBACK_AFTER) {
        (void)sync_file_range(pw->fd, pw->flushed, pw->written - pw->flushed,
                              SYNC_FILE_RANGE_WRITE);
        pw->flushed = pw->written;
    }
    return 0;
}

/* Publishes the temporary file under the object's name without replacing (8). */
static int
publish_no_overwrite(posix_writer *pw, pd_err *err)
{
    pd_writer *w = &pw->base;

    if (renameat2(pw->dirfd, pw->tmpname, pw->dirfd, pw->name, RENAME_NOREPLACE) == 0)
        goto published;
    if (errno == EEXIST)
        goto exists;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return sys_fail(err, w->st, "commit", w->path, errno);
    // The file system lacks RENAME_NOREPLACE: link() refuses an existing name
    // just as atomically.
    if (linkat(pw->dirfd, pw->tmpname, pw->dirfd, pw->name, 0) < 0) {
        if (errno == EEXIST)
            goto exists;
        return sys_fail(err, w->st, "commit", w->path, errno);
    }
    // The object is published. Should this unlink fail, the temporary name
    // stays a second link to it, invisible, and free tries again.
    if (unlinkat(pw->dirfd, pw->tmpname, 0) < 0)
        return 0;
published:
    pd_free(pw->tmpname);
    pw->tmpname = NULL;
    return 0;
exists:
    return pd_err_set(err, PD_EEXIST,
                      "cannot store \"%s\" in repository \"%s\": the object exists already",
                      w->path, w->st->repo);
}

static int
posix_commit(pd_writer *w, pd_err *err)
{
    posix_writer *pw = (posix_writer *)w;
    int rc;

    // (3) data durable before any name points at it; (7) never retried: the
    // base marks the writer failed on any error here.
    if (fsync(pw->fd) < 0)
        return sys_fail(err, w->st, "write", w->path, errno);
    // (4) close reports deferred write errors on some file systems; the
    // descriptor is gone whatever it returns.
    int fd = pw->fd;
    pw->fd = -1;
    if (close(fd) < 0)
        return sys_fail(err, w->st, "write", w->path, errno);
    // (5), (8)
    if (w->opts.no_overwrite) {
        if ((rc = publish_no_overwrite(pw, err)) < 0)
            return rc;
    } else {
        if (renameat(pw->dirfd, pw->tmpname, pw->dirfd, pw->name) < 0)
            return sys_fail(err, w->st, "commit", w->path, errno);
        pd_free(pw->tmpname);
        pw->tmpname = NULL;
    }
    // (6) the new name durable before commit reports success.
    if (fsync(pw->dirfd) < 0)
        return sys_fail(err, w->st, "commit", w->path, errno);
    return 0;
}

static void
posix_writer_free(pd_writer *w)
{
    posix_writer *pw = (posix_writer *)w;

    close_fd(&pw->fd);
    // Uncommitted: the object is discarded. Not fsync'd: a temporary file
    // that comes back after a crash is invisible anyway (2).
    if (pw->tmpname != NULL)
        unlinkat(pw->dirfd, pw->tmpname, 0);
    close_fd(&pw->dirfd);
    pd_free(pw->name);
    pd_free(pw->tmpname);
}

static const pd_writer_ops posix_writer_ops = {posix_write, posix_commit, posix_writer_free};

static int
random_tmpname(char **out, const char *name, pd_err *err)
{
    unsigned char rnd[8];
    char hex[2 * sizeof(rnd) + 1];

    if (RAND_bytes(rnd, (int)sizeof(rnd)) != 1)
        return pd_err_set(err, PD_EFAIL,
                          "could not generate a temporary file name: OpenSSL's random generator "
                          "failed");
    pd_hex(hex, rnd, sizeof(rnd));
    *out = pd_asprintf(".%s.tmp.%s", name, hex);
    return 0;
}

static int
posix_open_write(pd_writer **out, pd_storage *st, const char *path, const pd_writer_opts *opts,
                 pd_err *err)
{
    posix_writer *pw = NULL;
    const char *name;
    int dirfd = -1, rc;

    if ((rc = open_parent(st, path, true, &dirfd, &name, err)) < 0)
        return rc;
    pw = pd_calloc(1, sizeof(*pw));
    pd_writer_init(&pw->base, &posix_writer_ops, st, path, opts);
    pw->dirfd = dirfd;
    pw->fd = -1;
    pw->name = pd_strdup(name);
    // 64 random bits make a clash with another writer's file (O_EXCL) all but
    // impossible; retry a few times anyway rather than fail.
    for (int attempt = 0; pw->fd < 0; attempt++) {
        pd_free(pw->tmpname);
        pw->tmpname = NULL;
        if ((rc = random_tmpname(&pw->tmpname, name, err)) < 0)
            goto fail;
        pw->fd = openat(dirfd, pw->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FILE_MODE);
        if (pw->fd < 0 && (errno != EEXIST || attempt == 3)) {
            int e = errno;
            pd_free(pw->tmpname);
            pw->tmpname = NULL;
            rc = sys_fail(err, st, "create", path, e);
            goto fail;
        }
    }
    // The umask may have taken bits from FILE_MODE.
    if (fchmod(pw->fd, FILE_MODE) < 0 || give_to_owner(st, pw->fd) < 0) {
        rc = sys_fail(err, st, "create", path, errno);
        goto fail;
    }
    *out = &pw->base;
    return 0;
fail:
    pd_writer_free(&pw->base);
    return rc;
}

/* ---- listing ---- */

typedef struct walk {
    pd_storage *st;
    const char *prefix; /* for messages */
    pd_storage_list_fn fn;
    void *payload;
    char path[PD_STORAGE_PATH_MAX + 1];
} walk;

/*
 * Lists the directory dirfd (owned: closed here), whose repository-relative
 * path is w->path[0..len).
 */
static int
walk_dir(walk *w, int dirfd, size_t len, int depth, pd_err *err)
{
    struct dirent *de;
    DIR *dir;
    int rc = 0;

    if (depth > MAX_DEPTH) {
        close(dirfd);
        return pd_err_set(err, PD_EIO,
                          "could not list \"%s\" in repository \"%s\": directories nest deeper "
                          "than %d levels (a symbolic link loop?)",
                          w->prefix, w->st->repo, MAX_DEPTH);
    }
    if ((dir = fdopendir(dirfd)) == NULL) {
        int e = errno;
        close(dirfd);
        return sys_fail(err, w->st, "list", len ? w->path : w->prefix, e);
    }
    for (;;) {
        struct stat sb;
        size_t nlen, plen;

        errno = 0;
        if ((de = readdir(dir)) == NULL) {
            if (errno != 0)
                rc = sys_fail(err, w->st, "list", len ? w->path : w->prefix, errno);
            break;
        }
        // Dot names are ".", "..", temporary files of writers (2) and
        // nothing else of ours: no object path has a segment starting '.'.
        if (de->d_name[0] == '.')
            continue;
        nlen = strlen(de->d_name);
        plen = len + (len ? 1 : 0) + nlen;
        if (plen > PD_STORAGE_PATH_MAX)
            continue; // no object can have this name
        if (len)
            w->path[len] = '/';
        memcpy(w->path + len + (len ? 1 : 0), de->d_name, nlen + 1);
        if (pd_storage_check_path(w->path, NULL) < 0)
            goto next; // not a name this repository could hold

        // Follows symbolic links, as open_read does (a WAL directory moved
        // to another disk); MAX_DEPTH stops a loop.
        if (fstatat(dirfd, de->d_name, &sb, 0) < 0) {
            if (errno == ENOENT)
                goto next; // removed while we list: not there any more
            rc = sys_fail(err, w->st, "list", w->path, errno);
            break;
        }
        if (S_ISREG(sb.st_mode)) {
            pd_storage_entry e = {w->path, (uint64_t)sb.st_size, (int64_t)sb.st_mtim.tv_sec};
            if ((rc = w->fn(w->payload, &e, err)) < 0)
                break;
        } else if (S_ISDIR(sb.st_mode)) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub < 0) {
                if (errno == ENOENT)
                    goto next;
                rc = sys_fail(err, w->st, "list", w->path, errno);
                break;
            }
            if ((rc = walk_dir(w, sub, plen, depth + 1, err)) < 0)
                break;
        }
next:
        w->path[len] = '\0';
    }
    closedir(dir);
    return rc;
}

static int
posix_list(pd_storage *st, const char *prefix, pd_storage_list_fn fn, void *payload, pd_err *err)
{
    walk *w;
    int fd, rc;

    if (prefix[0] == '\0')
        fd = fcntl(rootfd(st), F_DUPFD_CLOEXEC, 0);
    else
        fd = openat(rootfd(st), prefix, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0; // nothing under a missing prefix
        return sys_fail(err, st, "list", prefix, errno);
    }
    w = pd_calloc(1, sizeof(*w));
    w->st = st;
    w->prefix = prefix;
    w->fn = fn;
    w->payload = payload;
    memcpy(w->path, prefix, strlen(prefix) + 1);
    rc = walk_dir(w, fd, strlen(prefix), 0, err);
    pd_free(w);
    return rc;
}

/* ---- stat, remove, free space ---- */

static int
posix_stat(pd_storage *st, const char *path, pd_storage_entry *out, pd_err *err)
{
    struct stat sb;

    if (fstatat(rootfd(st), path, &sb, 0) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return pd_storage_err_notfound(err, st, path);
        return sys_fail(err, st, "read", path, errno);
    }
    if (!S_ISREG(sb.st_mode))
        return pd_storage_err_notfound(err, st, path);
    out->size = (uint64_t)sb.st_size;
    out->mtime = (int64_t)sb.st_mtim.tv_sec;
    return 0;
}

static int
posix_remove(pd_storage *st, const char *path, pd_err *err)
{
    const char *name;
    int dirfd = -1, rc;

    rc = open_parent(st, path, false, &dirfd, &name, err);
    if (rc == PD_ENOTFOUND)
        return 0;
    if (rc < 0)
        return rc;
    if (unlinkat(dirfd, name, 0) < 0) {
        if (errno == ENOENT)
            rc = 0;
        else
            rc = sys_fail(err, st, "remove", path, errno);
        goto cleanup;
    }
    // (9) gone for good before we say so.
    if (fsync(dirfd) < 0)
        rc = sys_fail(err, st, "remove", path, errno);
cleanup:
    close(dirfd);
    return rc;
}

/* Makes the removals in dirfd (directory dir) durable and closes it; keeps the first error. */
static int
sync_removed(pd_storage *st, int *dirfd, const char *dir, int rc, pd_err *err)
{
    if (*dirfd < 0)
        return rc;
    if (fsync(*dirfd) < 0 && rc == 0)
        rc = sys_fail(err, st, "remove", dir[0] ? dir : ".", errno);
    close_fd(dirfd);
    return rc;
}

/* As posix_remove for each path, with one directory fsync per directory run (9). */
static int
posix_remove_many(pd_storage *st, const char *const *paths, size_t n, pd_err *err)
{
    char dir[PD_STORAGE_PATH_MAX + 1] = ""; /* the directory dirfd is */
    int dirfd = -1, rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *slash = strrchr(paths[i], '/');
        int len = slash ? (int)(slash - paths[i]) : 0;
        const char *name;

        if (dirfd < 0 || (size_t)len != strlen(dir) || strncmp(dir, paths[i], (size_t)len) != 0) {
            if ((rc = sync_removed(st, &dirfd, dir, 0, err)) < 0)
                break;
            rc = open_parent(st, paths[i], false, &dirfd, &name, err);
            if (rc == PD_ENOTFOUND) {
                rc = 0;
                continue;
            }
            if (rc < 0)
                break;
            snprintf(dir, sizeof(dir), "%.*s", len, paths[i]);
        }
        name = slash ? slash + 1 : paths[i];
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
            rc = sys_fail(err, st, "remove", paths[i], errno);
    }
    return sync_removed(st, &dirfd, dir, rc, err);
}

/*
 * Empties the directory dirfd (borrowed), path[0..len) for messages.
 * Symbolic links are removed, never followed: nothing outside the prefix
 * may go.
 */
static int
remove_tree(pd_storage *st, int dirfd, char *path, size_t len, int depth, pd_err *err)
{
    struct dirent *de;
    DIR *dir;
    int fd, rc = 0;

    if (depth > MAX_DEPTH)
        return pd_err_set(err, PD_EIO,
                          "could not remove \"%s\" in repository \"%s\": directories nest deeper "
                          "than %d levels",
                          path, st->repo, MAX_DEPTH);
    if ((fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0)) < 0)
        return sys_fail(err, st, "remove", path, errno);
    if ((dir = fdopendir(fd)) == NULL) {
        int e = errno;
        close(fd);
        return sys_fail(err, st, "remove", path, e);
    }
    for (;;) {
        struct stat sb;
        size_t nlen;

        errno = 0;
        if ((de = readdir(dir)) == NULL) {
            if (errno != 0)
                rc = sys_fail(err, st, "remove", path, errno);
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        nlen = strlen(de->d_name);
        // Messages name the entry when it fits, else its directory.
        if (len + 1 + nlen <= PD_STORAGE_PATH_MAX) {
            path[len] = '/';
            memcpy(path + len + 1, de->d_name, nlen + 1);
        }
        if (fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT) {
                rc = sys_fail(err, st, "remove", path, errno);
                break;
            }
        } else if (S_ISDIR(sb.st_mode)) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = sys_fail(err, st, "remove", path, errno);
                break;
            }
            rc = remove_tree(st, sub, path, strlen(path), depth + 1, err);
            close(sub);
            if (rc < 0)
                break;
            if (unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
                rc = sys_fail(err, st, "remove", path, errno);
                break;
            }
        } else if (unlinkat(dirfd, de->d_name, 0) < 0 && errno != ENOENT) {
            rc = sys_fail(err, st, "remove", path, errno);
            break;
        }
        path[len] = '\0';
    }
    closedir(dir);
    return rc;
}

static int
posix_remove_prefix(pd_storage *st, const char *prefix, pd_err *err)
{
    char path[PD_STORAGE_PATH_MAX + 1];
    const char *name;
    struct stat sb;
    int parent = -1, fd = -1, rc;

    rc = open_parent(st, prefix, false, &parent, &name, err);
    if (rc == PD_ENOTFOUND)
        return 0;
    if (rc < 0)
        return rc;
    if (fstatat(parent, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
        rc = errno == ENOENT ? 0 : sys_fail(err, st, "remove", prefix, errno);
        goto cleanup;
    }
    if (S_ISDIR(sb.st_mode)) {
        fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            rc = sys_fail(err, st, "remove", prefix, errno);
            goto cleanup;
        }
        memcpy(path, prefix, strlen(prefix) + 1);
        if ((rc = remove_tree(st, fd, path, strlen(path), 0, err)) < 0)
            goto cleanup;
        if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
            rc = sys_fail(err, st, "remove", prefix, errno);
            goto cleanup;
        }
    } else if (unlinkat(parent, name, 0) < 0 && errno != ENOENT) {
        // An object or a symbolic link where the prefix should be: what lies
        // "under" it is that name itself.
        rc = sys_fail(err, st, "remove", prefix, errno);
        goto cleanup;
    }
    // (9) the prefix gone for good, and with it everything below.
    if (fsync(parent) < 0)
        rc = sys_fail(err, st, "remove", prefix, errno);
cleanup:
    if (fd >= 0)
        close(fd);
    close(parent);
    return rc;
}

static int
posix_free_space(pd_storage *st, uint64_t *bytes, pd_err *err)
{
    struct statvfs sv;

    if (fstatvfs(rootfd(st), &sv) < 0)
        return pd_err_sys(err, PD_EIO, "could not measure free space in repository \"%s\"",
                          st->repo);
    // f_bavail: what an unprivileged writer may use (excludes root's reserve).
    *bytes = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    return 0;
}

static void
posix_free(pd_storage *st)
{
    close_fd(&((posix_storage *)st)->rootfd);
}

static const pd_storage_ops posix_ops = {
    .name = "posix",
    .open_read = posix_open_read,
    .open_write = posix_open_write,
    .list = posix_list,
    .stat = posix_stat,
    .remove = posix_remove,
    .remove_many = posix_remove_many,
    .remove_prefix = posix_remove_prefix,
    .free_space = posix_free_space,
    .free = posix_free,
};

int
pd_storage_posix_open(pd_storage **out, const char *root, const char *repo, pd_err *err)
{
    posix_storage *ps;
    int fd;

    *out = NULL;
    fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        switch (errno) {
        case ENOENT:
            pd_err_sys(err, PD_ENOTFOUND, "cannot open repository \"%s\"", repo);
            return hinted(err, PD_ENOTFOUND,
                          "create the directory (mode 0700, owned by the user running "
                          "pgdrill) or correct repo");
        case ENOTDIR:
            pd_err_set(err, PD_ECONFIG, "cannot open repository \"%s\": it is not a directory",
                       repo);
            return hinted(err, PD_ECONFIG, "point repo at a directory");
        case EACCES:
        case EPERM:
            pd_err_sys(err, PD_EIO, "could not open repository \"%s\"", repo);
            return hinted(err, PD_EIO, "check the owner and mode of the repository directory");
        default:
            return pd_err_sys(err, PD_EIO, "could not open repository \"%s\"", repo);
        }
    }
    ps = pd_calloc(1, sizeof(*ps));
    pd_storage_init(&ps->base, &posix_ops, repo);
    ps->rootfd = fd;
    struct stat sb;
    if (geteuid() == 0 && fstat(fd, &sb) == 0 && sb.st_uid != 0) {
        ps->give = true;
        ps->uid = sb.st_uid;
        ps->gid = sb.st_gid;
    }
    *out = &ps->base;
    return 0;
}
