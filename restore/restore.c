/*
 * Physical restore (see restore.h).
 *
 * States of a target directory, crash-safe:
 *  1. Checked: target and tablespace directories are empty or missing, the
 *     backup is complete. Nothing is written before this.
 *  2. Extracting: PD_RESTORE_MARKER exists first; global/pg_control is
 *     written under PD_RESTORE_PGCONTROL, so PostgreSQL refuses to start a
 *     half-restored directory. A failure removes what was written.
 *  3. Synced: every file is on disk (syncfs), backup_manifest and the
 *     tablespace links are in place.
 *  4. Done: pg_control is renamed into place, then the marker is removed,
 *     each followed by an fsync of its directory.
 */
#include "restore/restore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fmt.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"
#include "restore/catalog.h"
#include "restore/fdio.h"
#include "restore/recovery.h"
#include "restore/tar.h"
#include "restore/verify.h"
#include "storage/repo.h"

/* ---- extraction ---- */

typedef struct extract_ctx {
    char *what;
    char *dir;
    struct archive *disk;
} extract_ctx;

/* True when a relative path stays inside its root: no "..", not absolute. */
static bool
path_is_inside(const char *p)
{
    if (p[0] == '/' || p[0] == '\0')
        return false;
    for (const char *s = p; *s;) {
        size_t n = strcspn(s, "/");
        if (n == 2 && s[0] == '.' && s[1] == '.')
            return false;
        s += n;
        while (*s == '/')
            s++;
    }
    return true;
}

/* A symlink target stays inside when, resolved from the link's directory, it never climbs out. */
static bool
link_is_inside(const char *entry, const char *target)
{
    int depth = 0;

    if (target[0] == '/')
        return false;
    for (const char *s = entry; *s; s++)
        if (*s == '/' && s[1] != '\0')
            depth++;
    for (const char *s = target; *s;) {
        size_t n = strcspn(s, "/");
        if (n == 2 && s[0] == '.' && s[1] == '.')
            depth--;
        else if (n > 0 && !(n == 1 && s[0] == '.'))
            depth++;
        if (depth < 0)
            return false;
        s += n;
        while (*s == '/')
            s++;
    }
    return true;
}

static int
extract_entry(void *payload, struct archive *a, struct archive_entry *e, pd_err *err)
{
    extract_ctx *x = payload;
    // Our own copies: archive_entry_set_pathname frees the entry's strings.
    char name_buf[PATH_MAX], hard_buf[PATH_MAX];
    const char *name = archive_entry_pathname(e);
    const char *link = archive_entry_symlink(e);
    const char *hard = archive_entry_hardlink(e);
    char full[PATH_MAX];

    if ((name && strlen(name) >= sizeof(name_buf)) || (hard && strlen(hard) >= sizeof(hard_buf)))
        return pd_err_set(err, PD_ECORRUPT, "tar archive \"%s\" has an entry name too long",
                          x->what);
    if (name)
        name = memcpy(name_buf, name, strlen(name) + 1);
    if (hard)
        hard = memcpy(hard_buf, hard, strlen(hard) + 1);
    const void *buf;
    size_t len;
    la_int64_t off;
    int r;

    // The server's tablespace links point at the original locations: restore
    // makes its own, at the mapped ones (as pg_basebackup -Fp does).
    if (name != NULL && link != NULL && strncmp(name, "pg_tblspc/", 10) == 0) {
        size_t digits = strspn(name + 10, "0123456789");
        const char *rest = name + 10 + digits;
        if (digits > 0 && (rest[0] == '\0' || (rest[0] == '/' && rest[1] == '\0')))
            return 0;
    }
    if (name == NULL || !path_is_inside(name))
        return pd_err_set(err, PD_ECORRUPT,
                          "tar archive \"%s\" has an entry outside the target: \"%s\"", x->what,
                          name ? name : "");
    if ((link && !link_is_inside(name, link)) || (hard && !path_is_inside(hard)))
        return pd_err_set(err, PD_ECORRUPT,
                          "tar archive \"%s\" has a link \"%s\" pointing outside the target",
                          x->what, name);
    // Invariant 2: pg_control arrives last, after everything is synced.
    snprintf(full, sizeof(full), "%s/%s", x->dir,
             strcmp(name, "global/pg_control") == 0 ? PD_RESTORE_PGCONTROL : name);
    archive_entry_set_pathname(e, full);
    if (hard) {
        char hfull[PATH_MAX];
        snprintf(hfull, sizeof(hfull), "%s/%s", x->dir, hard);
        archive_entry_set_hardlink(e, hfull);
    }
    if (archive_write_header(x->disk, e) != ARCHIVE_OK)
        return pd_err_set(err, PD_EIO, "could not restore \"%s\": %s", full,
                          archive_error_string(x->disk));
    while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
        if (archive_write_data_block(x->disk, buf, len, off) != ARCHIVE_OK)
            return pd_err_set(err, PD_EIO, "could not write \"%s\": %s", full,
                              archive_error_string(x->disk));
    }
    if (r != ARCHIVE_EOF)
        return pd_err_set(err, PD_ECORRUPT, "tar archive \"%s\" is damaged at \"%s\": %s", x->what,
                          name, archive_error_string(a));
    if (archive_write_finish_entry(x->disk) != ARCHIVE_OK)
        return pd_err_set(err, PD_EIO, "could not restore \"%s\": %s", full,
                          archive_error_string(x->disk));
    return 0;
}

static void
extract_free(void *payload)
{
    extract_ctx *x = payload;

    archive_write_free(x->disk);
    pd_free(x->what);
    pd_free(x->dir);
    pd_free(x);
}

pd_stage *
pd_restore_extractor_new(const char *what, const char *dir)
{
    extract_ctx *x = pd_calloc(1, sizeof(*x));

    x->what = pd_strdup(what);
    x->dir = pd_strdup(dir);
    x->disk = archive_write_disk_new();
    // libarchive's guards as well as ours in extract_entry. Not NOABSOLUTEPATHS:
    // we prefix every (checked, relative) entry with the absolute target.
    archive_write_disk_set_options(x->disk, ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                                ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME);
    // Each restore stage is one tar: reuse the tar reader with our entry hook.
    pd_stage *s = pd_tar_reader_new(what, extract_entry, x);
    pd_stage_set_cleanup(s, extract_free, x);
    return s;
}

/* ---- directories ---- */

/* 1 when dir is missing, 0 when empty, PD_ECONFIG when it holds anything. */
static int
check_empty(const char *dir, const char *what, pd_err *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int rc = 0;

    if (d == NULL) {
        if (errno == ENOENT)
            return 1;
        return pd_err_sys(err, PD_ECONFIG, "cannot use %s \"%s\"", what, dir);
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            rc = pd_err_set(err, PD_ECONFIG, "%s \"%s\" is not empty", what, dir);
            pd_err_hint(err, "restore into an empty or new directory");
            break;
        }
    }
    closedir(d);
    return rc;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    // Keep the top directory (it may have existed, empty, before).
    if (ftw->level == 0)
        return 0;
    return remove(path) < 0 ? 0 : 0;
}

/* Removes what a failed restore wrote below dir; dir itself too if we made it. */
static void
undo_dir(const char *dir, bool created)
{
    nftw(dir, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
    if (created)
        rmdir(dir);
}

static int
fsync_path(const char *path, pd_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fsync(fd) < 0) {
        int rc = pd_err_sys(err, PD_EIO, "could not fsync \"%s\"", path);
        if (fd >= 0)
            close(fd);
        return rc;
    }
    close(fd);
    return 0;
}

static int
sync_tree(const char *dir, pd_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 || syncfs(fd) < 0) {
        int rc = pd_err_sys(err, PD_EIO, "could not flush the restored files in \"%s\"", dir);
        if (fd >= 0)
            close(fd);
        return rc;
    }
    close(fd);
    return 0;
}

/* ---- the restore ---- */

typedef struct target {
    char *oid;
    char *dir;
    bool created;
} target;

static char *
absolute(const char *dir)
{
    char cwd[PATH_MAX];

    if (dir[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
        return pd_strdup(dir);
    return pd_asprintf("%s/%s", cwd, dir);
}

static int
write_text(const char *path, const char *text, pd_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(text);

    if (fd < 0)
        return pd_err_sys(err, PD_EIO, "could not create \"%s\"", path);
    int rc = pd_fdio_write_all(fd, text, len, path, err);
    if (rc == 0 && fsync(fd) < 0)
        rc = pd_err_sys(err, PD_EIO, "could not fsync \"%s\"", path);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return close(fd) < 0 ? pd_err_sys(err, PD_EIO, "could not write \"%s\"", path) : 0;
}

static json_t *
find_object(json_t *manifest, const char *name)
{
    json_t *o;
    size_t i;

    json_array_foreach(json_object_get(manifest, "objects"), i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "name")) ?: "", name) == 0)
            return o;
    }
    return NULL;
}

static int
restore_object(pd_repo *r, const char *id, json_t *o, const char *dir, pd_err *err)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    char *obj = pd_asprintf("backups/%s/%s", id, name);
    pd_object_info info;
    pd_stage *sink;
    int rc;

    if (pd_verify_object_info(&info, o) < 0) {
        rc = pd_err_set(err, PD_ECORRUPT, "manifest of backup %s has a bad entry for %s", id, name);
    } else {
        sink = pd_restore_extractor_new(obj, dir);
        rc = pd_objr_read(r, obj, &info, sink, NULL, err);
        pd_stage_free(sink);
    }
    pd_free(obj);
    return rc;
}

int
pd_restore_physical(json_t **manifest, const pd_config *cfg, const pd_restore_opts *opts,
                    pd_err *err)
{
    pd_recovery_plan_t plan = {0};
    target t[PD_RESTORE_MAX_MAPS + 1];
    int nt = 0;
    pd_repo *r = NULL;
    json_t *m = NULL, *ts, *o;
    const char *id;
    char *base = NULL, *path = NULL;
    char size[PD_FMT_BUF], dur[PD_FMT_BUF];
    double t0 = pd_time_mono();
    bool writing = false;
    size_t i;
    int rc, mfd = -1;

    *manifest = NULL;
    memset(t, 0, sizeof(t));
    if ((rc = pd_repo_open(&r, cfg, err)) < 0)
        goto cleanup;
    if ((rc = pd_recovery_plan(&plan, r, opts, err)) < 0)
        goto cleanup;
    m = json_incref(plan.manifest);
    id = json_string_value(json_object_get(m, "id"));

    // Invariant 1: every check before anything is written.
    base = absolute(opts->target_dir);
    if ((rc = check_empty(base, "target directory", err)) < 0)
        goto cleanup;
    t[nt].oid = pd_strdup("");
    t[nt].dir = pd_strdup(base);
    t[nt++].created = rc == 1;
    ts = json_object_get(m, "tablespaces");
    for (int k = 0; k < opts->n_maps; k++) {
        bool known = false;
        json_array_foreach(ts, i, o)
        {
            known |=
                strcmp(json_string_value(json_object_get(o, "oid")) ?: "", opts->maps[k].oid) == 0;
        }
        if (!known) {
            rc = pd_err_set(err, PD_ECONFIG, "backup %s has no tablespace with oid %s", id,
                            opts->maps[k].oid);
            goto cleanup;
        }
    }
    json_array_foreach(ts, i, o)
    {
        const char *oid = json_string_value(json_object_get(o, "oid"));
        const char *loc = json_string_value(json_object_get(o, "location"));
        for (int k = 0; k < opts->n_maps; k++)
            if (strcmp(opts->maps[k].oid, oid) == 0)
                loc = opts->maps[k].dir;
        if (oid == NULL || loc == NULL || nt > PD_RESTORE_MAX_MAPS) {
            rc = pd_err_set(err, PD_ECORRUPT, "manifest of backup %s has a bad tablespace", id);
            goto cleanup;
        }
        if (loc[0] != '/') {
            rc = pd_err_set(err, PD_ECONFIG, "tablespace %s location \"%s\" is not absolute", oid,
                            loc);
            goto cleanup;
        }
        if ((rc = check_empty(loc, "tablespace directory", err)) < 0) {
            pd_err_hint(err, "map it elsewhere with --tablespace-map %s=DIR", oid);
            goto cleanup;
        }
        t[nt].oid = pd_strdup(oid);
        t[nt].dir = pd_strdup(loc);
        t[nt++].created = rc == 1;
    }
    rc = 0;
    if (opts->dry_run) {
        pd_recovery_print_dry_run(&plan, base);
        if (plan.missing_segment[0]) {
            rc = pd_err_set(err, PD_ECORRUPT,
                            "WAL file %s is missing from the archive: recovery from backup %s "
                            "would stop there",
                            plan.missing_segment, id);
            goto cleanup;
        }
        *manifest = m;
        m = NULL;
        goto cleanup;
    }
    if (plan.missing_segment[0])
        pd_log_warning("WAL file %s is missing from the archive: recovery will stop there and "
                       "later changes will not be restored",
                       plan.missing_segment);

    // Invariant 2: the marker first, then the data.
    writing = true;
    for (int k = 0; k < nt; k++) {
        if (t[k].created && mkdir(t[k].dir, 0700) < 0) {
            rc = pd_err_sys(err, PD_EIO, "could not create directory \"%s\"", t[k].dir);
            t[k].created = false;
            goto cleanup;
        }
        if (chmod(t[k].dir, 0700) < 0) {
            rc = pd_err_sys(err, PD_EIO, "could not set the mode of \"%s\"", t[k].dir);
            goto cleanup;
        }
    }
    path = pd_asprintf("%s/%s", base, PD_RESTORE_MARKER);
    if ((rc = write_text(path,
                         "pgdrill is restoring into this directory, or a restore failed here.\n"
                         "Do not start PostgreSQL on it; restore again into an empty directory.\n",
                         err)) < 0)
        goto cleanup;
    pd_free(path);
    path = NULL;
    pd_log_info(
        "restoring backup %s (%s) into %s", id,
        pd_fmt_size(size, sizeof(size), (uint64_t)json_integer_value(json_object_get(m, "size"))),
        base);
    if ((o = find_object(m, "base.tar")) == NULL) {
        rc = pd_err_set(err, PD_ECORRUPT, "manifest of backup %s lists no base.tar", id);
        goto cleanup;
    }
    if ((rc = restore_object(r, id, o, base, err)) < 0)
        goto cleanup;
    for (int k = 1; k < nt; k++) {
        char name[64];
        snprintf(name, sizeof(name), "%s.tar", t[k].oid);
        if ((o = find_object(m, name)) == NULL) {
            rc = pd_err_set(err, PD_ECORRUPT, "manifest of backup %s lists no %s", id, name);
            goto cleanup;
        }
        if ((rc = restore_object(r, id, o, t[k].dir, err)) < 0)
            goto cleanup;
        path = pd_asprintf("%s/pg_tblspc/%s", base, t[k].oid);
        mkdir(path, 0700); // pg_tblspc may be missing; errors show at symlink
        pd_free(path);
        path = pd_asprintf("%s/pg_tblspc", base);
        mkdir(path, 0700);
        pd_free(path);
        path = pd_asprintf("%s/pg_tblspc/%s", base, t[k].oid);
        rmdir(path);
        if (symlink(t[k].dir, path) < 0) {
            rc = pd_err_sys(err, PD_EIO, "could not link tablespace \"%s\" to \"%s\"", path,
                            t[k].dir);
            goto cleanup;
        }
        pd_free(path);
        path = NULL;
    }
    // backup_manifest, so that pg_verifybackup can check the result.
    if ((o = find_object(m, "backup_manifest")) != NULL) {
        pd_object_info info;
        path = pd_asprintf("%s/backup_manifest", base);
        mfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (mfd < 0) {
            rc = pd_err_sys(err, PD_EIO, "could not create \"%s\"", path);
            goto cleanup;
        }
        char *obj = pd_asprintf("backups/%s/backup_manifest", id);
        pd_stage *sink = pd_fdio_sink_new(&mfd, path);
        rc = pd_verify_object_info(&info, o) < 0
                 ? pd_err_set(err, PD_ECORRUPT, "manifest of backup %s is damaged", id)
                 : pd_objr_read(r, obj, &info, sink, NULL, err);
        pd_stage_free(sink);
        pd_free(obj);
        close(mfd);
        mfd = -1;
        if (rc < 0)
            goto cleanup;
        pd_free(path);
        path = NULL;
    }
    // Recovery settings: restore_command and the target, when the archive is used.
    if (plan.recover && (rc = pd_recovery_write(base, &plan, opts, err)) < 0)
        goto cleanup;
    // Invariant 3, then 4.
    for (int k = 0; k < nt; k++)
        if ((rc = sync_tree(t[k].dir, err)) < 0)
            goto cleanup;
    char *from = pd_asprintf("%s/%s", base, PD_RESTORE_PGCONTROL);
    char *to = pd_asprintf("%s/global/pg_control", base);
    char *global = pd_asprintf("%s/global", base);
    if (rename(from, to) < 0)
        rc = pd_err_sys(err, PD_ECORRUPT, "could not put pg_control in place in \"%s\"", base);
    else
        rc = fsync_path(global, err);
    pd_free(from);
    pd_free(to);
    pd_free(global);
    if (rc < 0)
        goto cleanup;
    path = pd_asprintf("%s/%s", base, PD_RESTORE_MARKER);
    if (unlink(path) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not remove \"%s\"", path);
        goto cleanup;
    }
    if ((rc = fsync_path(base, err)) < 0)
        goto cleanup;
    writing = false;
    pd_log_info("restored backup %s into %s in %s", id, base,
                pd_fmt_duration(dur, sizeof(dur), pd_time_mono() - t0));
    *manifest = m;
    m = NULL;
cleanup:
    if (rc < 0 && writing) {
        for (int k = 0; k < nt; k++)
            undo_dir(t[k].dir, t[k].created);
        pd_log_info("the failed restore removed what it had written");
    }
    if (mfd >= 0)
        close(mfd);
    for (int k = 0; k < nt; k++) {
        pd_free(t[k].oid);
        pd_free(t[k].dir);
    }
    json_decref(m);
    json_decref(plan.manifest);
    pd_repo_free(r);
    pd_free(base);
    pd_free(path);
    return rc;
}
