/*
 * pd_storetool: the storage interface (storage/storage.h) from the command
 * line, for integration tests of the drivers (S3 above all: pagination,
 * batched deletes, multipart, faults) without a whole backup around them.
 *
 *   pd_storetool CONFIG put PATH [--no-overwrite]   < data
 *   pd_storetool CONFIG get PATH                    > data
 *   pd_storetool CONFIG stat PATH        prints "SIZE MTIME"
 *   pd_storetool CONFIG list PREFIX      prints "PATH SIZE" per object
 *   pd_storetool CONFIG rm PATH
 *   pd_storetool CONFIG rmprefix PREFIX
 *   pd_storetool CONFIG putmany PREFIX N  N objects PREFIX/o-00000.. of 10 bytes
 *
 * CONFIG is a pgdrill configuration file with one cluster section; its repo
 * and s3-* keys (and log-level) apply. Exit statuses are pgdrill's; the
 * message goes to stderr as "pd_storetool: error: ...".
 *
 * Invariant: constant memory (one PD_STORAGE_READ_BUF buffer) for put/get.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/log.h"
#include "common/mem.h"
#include "storage/storage.h"

#define PROG "pd_storetool"

static int
fail(const pd_err *err)
{
    char line[PD_ERR_MSG_MAX + PD_ERR_HINT_MAX + 4];
    pd_err_format(err, line, sizeof(line));
    fprintf(stderr, PROG ": error: %s\n", line);
    return pd_err_exit_code(err->code);
}

static int
print_entry(void *payload, const pd_storage_entry *e, pd_err *err)
{
    (void)payload;
    (void)err;
    printf("%s %llu\n", e->path, (unsigned long long)e->size);
    return 0;
}

static int
put(pd_storage *st, const char *path, bool no_overwrite, pd_err *err)
{
    pd_writer_opts opts = PD_WRITER_OPTS_INIT;
    pd_writer *w = NULL;
    unsigned char *buf = pd_malloc(PD_STORAGE_READ_BUF);
    int rc;

    opts.no_overwrite = no_overwrite;
    if ((rc = pd_storage_open_write(&w, st, path, &opts, err)) < 0)
        goto done;
    for (;;) {
        ssize_t n = read(0, buf, PD_STORAGE_READ_BUF);
        if (n < 0) {
            rc = pd_err_sys(err, PD_EIO, "could not read stdin");
            goto done;
        }
        if (n == 0)
            break;
        if ((rc = pd_writer_write(w, buf, (size_t)n, err)) < 0)
            goto done;
    }
    rc = pd_writer_commit(w, err);
done:
    pd_writer_free(w);
    pd_free(buf);
    return rc;
}

static int
get(pd_storage *st, const char *path, pd_err *err)
{
    pd_reader *r = NULL;
    unsigned char *buf = pd_malloc(PD_STORAGE_READ_BUF);
    size_t n;
    int rc;

    if ((rc = pd_storage_open_read(&r, st, path, err)) < 0)
        goto done;
    for (;;) {
        if ((rc = pd_reader_read(r, buf, PD_STORAGE_READ_BUF, &n, err)) < 0)
            goto done;
        if (n == 0)
            break;
        if (fwrite(buf, 1, n, stdout) != n) {
            rc = pd_err_sys(err, PD_EIO, "could not write stdout");
            goto done;
        }
    }
    if (fflush(stdout) != 0)
        rc = pd_err_sys(err, PD_EIO, "could not write stdout");
done:
    pd_reader_free(r);
    pd_free(buf);
    return rc;
}

static int
putmany(pd_storage *st, const char *prefix, long n, pd_err *err)
{
    for (long i = 0; i < n; i++) {
        char path[PD_STORAGE_PATH_MAX + 1];
        pd_writer *w = NULL;
        int rc;

        snprintf(path, sizeof(path), "%s/o-%05ld", prefix, i);
        if ((rc = pd_storage_open_write(&w, st, path, NULL, err)) == 0 &&
            (rc = pd_writer_write(w, "0123456789", 10, err)) == 0)
            rc = pd_writer_commit(w, err);
        pd_writer_free(w);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    pd_config_opts copts = PD_CONFIG_OPTS_INIT;
    pd_config *cfg = NULL;
    pd_storage *st = NULL;
    pd_err err = PD_ERR_INIT;
    pd_log_level level;
    int rc;

    if (argc < 4) {
        fprintf(stderr, "usage: " PROG " CONFIG put|get|stat|list|rm|rmprefix|putmany PATH ...\n");
        return 2;
    }
    pd_log_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    copts.path = argv[1];
    if ((rc = pd_config_load(&cfg, &copts, &err)) < 0)
        return fail(&err);
    if (pd_config_get(cfg, "log-level") != NULL &&
        pd_log_parse_level(pd_config_get(cfg, "log-level"), &level, NULL) == 0)
        pd_log_set_level(level);
    if ((rc = pd_storage_open_config(&st, cfg, &err)) < 0)
        goto done;

    const char *cmd = argv[2], *path = argv[3];
    if (strcmp(cmd, "put") == 0) {
        rc = put(st, path, argc > 4 && strcmp(argv[4], "--no-overwrite") == 0, &err);
    } else if (strcmp(cmd, "get") == 0) {
        rc = get(st, path, &err);
    } else if (strcmp(cmd, "stat") == 0) {
        pd_storage_entry e;
        if ((rc = pd_storage_stat(st, path, &e, &err)) == 0)
            printf("%llu %lld\n", (unsigned long long)e.size, (long long)e.mtime);
    } else if (strcmp(cmd, "list") == 0) {
        rc = pd_storage_list(st, strcmp(path, "/") == 0 ? "" : path, print_entry, NULL, &err);
    } else if (strcmp(cmd, "rm") == 0) {
        rc = pd_storage_remove(st, path, &err);
    } else if (strcmp(cmd, "rmprefix") == 0) {
        rc = pd_storage_remove_prefix(st, path, &err);
    } else if (strcmp(cmd, "putmany") == 0 && argc > 4) {
        rc = putmany(st, path, strtol(argv[4], NULL, 10), &err);
    } else {
        rc = pd_err_set(&err, PD_EUSAGE, "unknown command \"%s\"", cmd);
    }
done:
    pd_storage_free(st);
    pd_config_free(cfg);
    curl_global_cleanup();
    return rc < 0 ? fail(&err) : 0;
}
