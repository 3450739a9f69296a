/*
 * The driver-independent half of storage (see storage.h): choosing a driver
 * from the repo setting, checking every path before a driver sees it, sticky
 * writer errors, and the helpers built on the ops (read_all, read_to_stage,
 * the writer sink, exists, remove_prefix by listing).
 *
 * Invariant: no op of a driver is called with a path that
 * pd_storage_check_path() refused, and no writer op runs after a failure.
 */
#include "storage/storage.h"

#include <string.h>

#include "common/mem.h"
#include "storage/s3.h"

/* Sets the hint of err's message and returns code (also when err is NULL). */
static int
hinted(pd_err *err, int code, const char *hint)
{
    pd_err_hint(err, "%s", hint);
    return code;
}

void
pd_storage_init(pd_storage *st, const pd_storage_ops *ops, const char *repo)
{
    st->ops = ops;
    st->repo = pd_strdup(repo);
}

void
pd_reader_init(pd_reader *r, const pd_reader_ops *ops, pd_storage *st, const char *path)
{
    r->ops = ops;
    r->st = st;
    r->path = pd_strdup(path);
}

void
pd_writer_init(pd_writer *w, const pd_writer_ops *ops, pd_storage *st, const char *path,
               const pd_writer_opts *opts)
{
    static const pd_writer_opts defaults = PD_WRITER_OPTS_INIT;

    w->ops = ops;
    w->st = st;
    w->path = pd_strdup(path);
    w->opts = opts ? *opts : defaults;
    w->committed = false;
    w->rc = 0;
    pd_err_clear(&w->failure);
}

int
pd_storage_err_notfound(pd_err *err, const pd_storage *st, const char *path)
{
    return pd_err_set(err, PD_ENOTFOUND, "object \"%s\" does not exist in repository \"%s\"", path,
                      st->repo);
}

static bool
is_absolute_path(const char *repo)
{
    return repo[0] == '/';
}

int
pd_storage_open(pd_storage **out, const char *repo, pd_err *err)
{
    *out = NULL;
    if (repo == NULL || repo[0] == '\0')
        return pd_err_set(err, PD_ECONFIG, "no repository is configured; set repo");
    if (strncmp(repo, "s3://", 5) == 0)
        return pd_storage_s3_open(out, repo, NULL, err);
    if (!is_absolute_path(repo)) {
        pd_err_set(err, PD_ECONFIG,
                   "bad repository \"%s\": it is neither an absolute path nor an s3:// URL", repo);
        return hinted(err, PD_ECONFIG, "write repo as /path/to/repository or s3://bucket/prefix");
    }

    // "/backup/" and "/backup" are one repository; keep "/" itself.
    size_t len = strlen(repo);
    while (len > 1 && repo[len - 1] == '/')
        len--;
    char *root = pd_strndup(repo, len);
    int rc = pd_storage_posix_open(out, root, repo, err);
    pd_free(root);
    return rc;
}

int
pd_storage_open_config(pd_storage **out, const pd_config *cfg, pd_err *err)
{
    const char *repo = pd_config_get(cfg, "repo");

    if (repo != NULL && strncmp(repo, "s3://", 5) == 0) {
        *out = NULL;
        return pd_storage_s3_open(out, repo, cfg, err);
    }
    return pd_storage_open(out, repo, err);
}

void
pd_storage_free(pd_storage *st)
{
    if (st == NULL)
        return;
    if (st->ops->free)
        st->ops->free(st);
    pd_free(st->repo);
    pd_free(st);
}

const char *
pd_storage_repo(const pd_storage *st)
{
    return st->repo;
}

static int
bad_path(pd_err *err, const char *path, const char *why)
{
    return pd_err_set(err, PD_ECONFIG, "invalid path \"%s\" in repository: %s", path, why);
}

int
pd_storage_check_path(const char *path, pd_err *err)
{
    size_t seg = 0; // length of the current segment

    if (path == NULL || path[0] == '\0')
        return bad_path(err, "", "it is empty");
    if (strlen(path) > PD_STORAGE_PATH_MAX)
        return bad_path(err, path, "it is longer than 1024 characters");
    if (path[0] == '/')
        return bad_path(err, path, "it starts with '/'; paths are relative to the repository");
    for (const char *p = path;; p++) {
        unsigned char c = (unsigned char)*p;

        if (c == '/' || c == '\0') {
            if (seg == 0)
                return bad_path(err, path, "it has an empty segment");
            if (c == '\0')
                return 0;
            seg = 0;
            continue;
        }
        if (seg == 0 && c == '.') {
            // Covers "." and "..", and keeps object names apart from the
            // drivers' temporary files (".<name>.tmp.<random>").
            if ((p[1] == '.' && (p[2] == '/' || p[2] == '\0')) || p[1] == '/' || p[1] == '\0')
                return bad_path(err, path, "\".\" and \"..\" segments are not allowed");
            return bad_path(err, path, "a segment may not start with '.'");
        }
        if (c == '\\')
            return bad_path(err, path, "it contains a backslash");
        if (c < 0x20 || c == 0x7f)
            return bad_path(err, path, "it contains a control character");
        if (++seg > PD_STORAGE_SEGMENT_MAX)
            return bad_path(err, path, "a segment is longer than 200 characters");
    }
}

/* A list prefix may also be "" (the whole repository). */
static int
check_prefix(const char *prefix, pd_err *err)
{
    if (prefix != NULL && prefix[0] == '\0')
        return 0;
    return pd_storage_check_path(prefix, err);
}

/* ---- reading ---- */

int
pd_storage_open_read(pd_reader **out, pd_storage *st, const char *path, pd_err *err)
{
    int rc;

    *out = NULL;
    if ((rc = pd_storage_check_path(path, err)) < 0)
        return rc;
    return st->ops->open_read(out, st, path, err);
}

int
pd_reader_read(pd_reader *r, void *buf, size_t len, size_t *nread, pd_err *err)
{
    *nread = 0;
    if (len == 0)
        return 0;
    return r->ops->read(r, buf, len, nread, err);
}

void
pd_reader_free(pd_reader *r)
{
    if (r == NULL)
        return;
    if (r->ops->free)
        r->ops->free(r);
    pd_free(r->path);
    pd_free(r);
}

int
pd_storage_read_to_stage(pd_storage *st, const char *path, pd_stage *chain, pd_err *err)
{
    pd_reader *r = NULL;
    unsigned char *buf = NULL;
    size_t n;
    int rc;

    if ((rc = pd_storage_open_read(&r, st, path, err)) < 0)
        goto cleanup;
    // One fixed buffer whatever the object's size (constant memory).
    buf = pd_malloc(PD_STORAGE_READ_BUF);
    for (;;) {
        if ((rc = pd_reader_read(r, buf, PD_STORAGE_READ_BUF, &n, err)) < 0)
            goto cleanup;
        if (n == 0)
            break;
        if ((rc = pd_stage_write(chain, buf, n, err)) < 0)
            goto cleanup;
    }
    rc = pd_stage_finish(chain, err);
cleanup:
    pd_free(buf);
    pd_reader_free(r);
    return rc;
}

int
pd_storage_read_all(pd_storage *st, const char *path, size_t max, char **buf, size_t *len,
                    pd_err *err)
{
    pd_reader *r = NULL;
    char *data = NULL;
    size_t cap, used = 0, n;
    int rc;

    *buf = NULL;
    *len = 0;
    PD_ASSERT(max < SIZE_MAX - 1);
    if ((rc = pd_storage_open_read(&r, st, path, err)) < 0)
        goto cleanup;
    // Grow up to max + 1 bytes: one byte past the limit proves the object too
    // large without reading more of it.
    cap = max + 1 < 4096 ? max + 1 : 4096;
    data = pd_malloc(cap + 1);
    for (;;) {
        if (used == cap) {
            if (cap == max + 1) {
                rc = pd_err_set(err, PD_ECORRUPT,
                                "object \"%s\" in repository \"%s\" is larger than %zu bytes", path,
                                st->repo, max);
                goto cleanup;
            }
            cap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
            data = pd_realloc(data, cap + 1);
        }
        if ((rc = pd_reader_read(r, data + used, cap - used, &n, err)) < 0)
            goto cleanup;
        if (n == 0)
            break;
        used += n;
    }
    data[used] = '\0';
    *buf = data;
    *len = used;
    data = NULL;
    rc = 0;
cleanup:
    pd_free(data);
    pd_reader_free(r);
    return rc;
}

/* ---- writing ---- */

int
pd_storage_open_write(pd_writer **out, pd_storage *st, const char *path, const pd_writer_opts *opts,
                      pd_err *err)
{
    int rc;

    *out = NULL;
    if ((rc = pd_storage_check_path(path, err)) < 0)
        return rc;
    return st->ops->open_write(out, st, path, opts, err);
}

/* Records a writer failure so that later calls repeat it. */
static int
stick(pd_writer *w, int rc, const pd_err *err)
{
    w->rc = rc;
    if (err)
        w->failure = *err;
    else
        pd_err_set(&w->failure, rc, "could not write \"%s\" in repository \"%s\"", w->path,
                   w->st->repo);
    return rc;
}

static int
repeat(const pd_writer *w, pd_err *err)
{
    if (err)
        *err = w->failure;
    return w->rc;
}

int
pd_writer_write(pd_writer *w, const void *buf, size_t len, pd_err *err)
{
    int rc;

    if (w->rc)
        return repeat(w, err);
    PD_ASSERT(!w->committed);
    if (len == 0)
        return 0;
    if ((rc = w->ops->write(w, buf, len, err)) < 0)
        return stick(w, rc, err);
    return 0;
}

int
pd_writer_commit(pd_writer *w, pd_err *err)
{
    int rc;

    if (w->rc)
        return repeat(w, err);
    PD_ASSERT(!w->committed);
    if ((rc = w->ops->commit(w, err)) < 0)
        return stick(w, rc, err);
    w->committed = true;
    return 0;
}

void
pd_writer_free(pd_writer *w)
{
    if (w == NULL)
        return;
    if (w->ops->free)
        w->ops->free(w);
    pd_free(w->path);
    pd_free(w);
}

static int
writer_sink_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    return pd_writer_write(payload, buf, len, err);
}

pd_stage *
pd_storage_writer_stage(pd_writer *w)
{
    // No finish callback: committing is the owner's decision, after the
    // whole chain (trailers included) finished.
    return pd_stage_sink_new(writer_sink_write, NULL, w);
}

/* ---- listing and the rest ---- */

int
pd_storage_list(pd_storage *st, const char *prefix, pd_storage_list_fn fn, void *payload,
                pd_err *err)
{
    int rc;

    if ((rc = check_prefix(prefix, err)) < 0)
        return rc;
    return st->ops->list(st, prefix, fn, payload, err);
}

int
pd_storage_stat(pd_storage *st, const char *path, pd_storage_entry *out, pd_err *err)
{
    int rc;

    memset(out, 0, sizeof(*out));
    if ((rc = pd_storage_check_path(path, err)) < 0)
        return rc;
    if ((rc = st->ops->stat(st, path, out, err)) < 0)
        return rc;
    out->path = path;
    return 0;
}

int
pd_storage_exists(pd_storage *st, const char *path, bool *exists, pd_err *err)
{
    pd_storage_entry e;
    pd_err tmp = PD_ERR_INIT;
    int rc;

    *exists = false;
    rc = pd_storage_stat(st, path, &e, &tmp);
    if (rc == PD_ENOTFOUND)
        return 0;
    if (rc < 0) {
        if (err)
            *err = tmp;
        return rc;
    }
    *exists = true;
    return 0;
}

int
pd_storage_remove(pd_storage *st, const char *path, pd_err *err)
{
    int rc;

    if ((rc = pd_storage_check_path(path, err)) < 0)
        return rc;
    return st->ops->remove(st, path, err);
}

int
pd_storage_remove_many(pd_storage *st, const char *const *paths, size_t n, pd_err *err)
{
    int rc;

    for (size_t i = 0; i < n; i++)
        if ((rc = pd_storage_check_path(paths[i], err)) < 0)
            return rc;
    if (st->ops->remove_many)
        return st->ops->remove_many(st, paths, n, err);
    for (size_t i = 0; i < n; i++)
        if ((rc = st->ops->remove(st, paths[i], err)) < 0)
            return rc;
    return 0;
}

static int
remove_one(void *payload, const pd_storage_entry *e, pd_err *err)
{
    pd_storage *st = payload;
    return st->ops->remove(st, e->path, err);
}

int
pd_storage_remove_prefix(pd_storage *st, const char *prefix, pd_err *err)
{
    int rc;

    if ((rc = pd_storage_check_path(prefix, err)) < 0)
        return rc;
    if (st->ops->remove_prefix)
        return st->ops->remove_prefix(st, prefix, err);
    return st->ops->list(st, prefix, remove_one, st, err);
}

int
pd_storage_free_space(pd_storage *st, uint64_t *bytes, pd_err *err)
{
    *bytes = 0;
    if (st->ops->free_space == NULL)
        return pd_err_set(err, PD_ENOTIMPL,
                          "cannot measure free space in repository \"%s\": the %s driver has "
                          "no such notion",
                          st->repo, st->ops->name);
    return st->ops->free_space(st, bytes, err);
}
