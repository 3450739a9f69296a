/*
 * archive-get (see archive_get.h). Invariant: path appears only by rename of
 * a fully written, verified (every frame's tag) and fsync'd temp file.
 */
#include "restore/archive_get.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "backup/archive.h"
#include "common/log.h"
#include "common/mem.h"
#include "restore/fdio.h"
#include "storage/repo.h"

int
pd_archive_get(const pd_config *cfg, const char *name, const char *path, pd_err *err)
{
    pd_repo *r = NULL;
    char *object = pd_wal_object_name(name);
    int rc;

    // A bad name is a usage error before the repository is even opened.
    if (object != NULL && (rc = pd_repo_open(&r, cfg, err)) < 0) {
        pd_free(object);
        return rc;
    }
    pd_free(object);
    rc = pd_archive_get_from(r, name, path, err);
    pd_repo_free(r);
    return rc;
}

int
pd_archive_get_from(pd_repo *r, const char *name, const char *path, pd_err *err)
{
    pd_stage *sink = NULL;
    unsigned char rnd[6];
    char *object = pd_wal_object_name(name);
    char *tmp = NULL, *dir = NULL;
    int fd = -1;
    int rc;

    if (object == NULL) {
        rc = pd_err_set(err, PD_EUSAGE, "\"%s\" is not a WAL file name", name);
        pd_err_hint(err, "restore_command must pass %%f and %%p: archive-get %%f %%p");
        goto cleanup;
    }
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        rc = pd_err_set(err, PD_EFAIL, "could not get random bytes from OpenSSL");
        goto cleanup;
    }
    tmp = pd_asprintf("%s.pgdrill.%02x%02x%02x%02x%02x%02x", path, rnd[0], rnd[1], rnd[2], rnd[3],
                      rnd[4], rnd[5]);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not create \"%s\"", tmp);
        goto cleanup;
    }
    sink = pd_fdio_sink_new(&fd, tmp);
    rc = pd_objr_read(r, object, NULL, sink, NULL, err);
    if (rc == PD_ENOTFOUND)
        goto cleanup;
    if (rc < 0)
        goto cleanup;
    if (fsync(fd) < 0 || close(fd) < 0) {
        fd = -1;
        rc = pd_err_sys(err, PD_EIO, "could not write \"%s\"", tmp);
        goto cleanup;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not rename \"%s\" to \"%s\"", tmp, path);
        goto cleanup;
    }
    pd_free(tmp);
    tmp = NULL;
    // The name must survive a crash of the restoring server too.
    dir = pd_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) < 0)
            rc = pd_err_sys(err, PD_EIO, "could not fsync the directory of \"%s\"", path);
        close(dfd);
    }
    if (rc == 0)
        pd_log_debug("restored WAL file %s", name);
cleanup:
    if (fd >= 0)
        close(fd);
    if (tmp)
        unlink(tmp);
    pd_free(tmp);
    pd_stage_free(sink);
    pd_free(object);
    pd_free(dir);
    return rc;
}
