/*
 * The storage interface: a repository is a flat namespace of objects named
 * by repository-relative paths ("main/backups/20261124T020000Z/base.tar"),
 * behind drivers for a local directory (posix.c) and S3 (s3.c). Nothing in
 * this interface is a file descriptor or a file-system path, so both drivers
 * fit behind the same ops.
 *
 * Key invariant: nothing appears at a path until pd_writer_commit() succeeds,
 * and a committed object is whole and durable; pd_writer_free() on an
 * uncommitted writer discards everything it wrote. Paths are checked by
 * pd_storage_check_path() here, before any driver sees them.
 */
#ifndef PGDRILL_STORAGE_STORAGE_H
#define PGDRILL_STORAGE_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "pipeline/stage.h"

/* Longest repository-relative path, and longest segment of one. */
#define PD_STORAGE_PATH_MAX    1024
#define PD_STORAGE_SEGMENT_MAX 200

/* Buffer size of pd_storage_read_to_stage(). */
#define PD_STORAGE_READ_BUF (128 * 1024)

typedef struct pd_storage pd_storage;
typedef struct pd_reader pd_reader;
typedef struct pd_writer pd_writer;

/* One object, as list and stat report it. */
typedef struct pd_storage_entry {
    const char *path; /* repository-relative; borrowed (see the function) */
    uint64_t size;    /* bytes */
    int64_t mtime;    /* last modification, seconds since the epoch (UTC) */
} pd_storage_entry;

typedef struct pd_writer_opts {
    /*
     * Refuse to replace an existing object: commit fails with PD_EEXIST and
     * leaves the existing object as it was (archive-push never overwrites).
     */
    bool no_overwrite;
} pd_writer_opts;

#define PD_WRITER_OPTS_INIT \
    {                       \
        false               \
    }

/*
 * Called once per object by pd_storage_list(). Returns 0 to go on, or a
 * negative PD_E* code (with err filled) to stop the listing, which then
 * returns that code. e and e->path are valid during the call only.
 */
typedef int (*pd_storage_list_fn)(void *payload, const pd_storage_entry *e, pd_err *err);

/* ---- using a repository ---- */

/*
 * Opens the repository named by repo (the `repo` setting):
 *   - an absolute path: the posix driver. The directory must exist (a missing
 *     mount point must not silently fill the root file system): PD_ENOTFOUND
 *     when it does not, PD_ECONFIG when it is not a directory;
 *   - "s3://bucket/prefix": the s3 driver with default settings and
 *     credentials from the environment (pd_storage_open_config() applies
 *     the s3-* settings);
 *   - anything else (a relative path, another scheme): PD_ECONFIG.
 * *out is owned by the caller (pd_storage_free) and NULL on failure.
 */
PD_MUST_CHECK int pd_storage_open(pd_storage **out, const char *repo, pd_err *err);

/*
 * pd_storage_open() of cfg's repo setting; for S3 with cfg's s3-* settings
 * (see pd_storage_s3_open() in s3.h).
 */
PD_MUST_CHECK int pd_storage_open_config(pd_storage **out, const pd_config *cfg, pd_err *err);

/* Frees st; NULL is fine. Readers and writers must be freed first. */
void pd_storage_free(pd_storage *st);

/* The repository as given to pd_storage_open() (for messages); borrowed from st. */
const char *pd_storage_repo(const pd_storage *st);

/*
 * Checks a repository-relative path: not empty, at most PD_STORAGE_PATH_MAX
 * bytes, '/'-separated segments that are not empty, at most
 * PD_STORAGE_SEGMENT_MAX bytes and do not start with '.' (so no "." or "..",
 * and never the name of a driver's temporary file), no backslash and no
 * control character. Paths can carry user input (`--backup ../x`), so a bad
 * one is PD_ECONFIG naming the path and the rule. Every function below runs
 * this check on its path first.
 */
PD_MUST_CHECK int pd_storage_check_path(const char *path, pd_err *err);

/*
 * Opens an object for reading. A missing object is PD_ENOTFOUND with
 * `object "<path>" does not exist in repository "<repo>"`. *out is owned by
 * the caller (pd_reader_free), NULL on failure, and must not outlive st.
 */
PD_MUST_CHECK int pd_storage_open_read(pd_reader **out, pd_storage *st, const char *path,
                                       pd_err *err);

/*
 * Reads up to len bytes into buf; *nread is 0 only at the end of the object.
 * PD_EIO on a read failure.
 */
PD_MUST_CHECK int pd_reader_read(pd_reader *r, void *buf, size_t len, size_t *nread, pd_err *err);

/* Frees r; NULL is fine. */
void pd_reader_free(pd_reader *r);

/*
 * Streams the object at path into chain (borrowed: the caller still owns and
 * frees it) through one PD_STORAGE_READ_BUF buffer, then finishes the chain.
 * Errors are those of open_read, read and the chain's stages; after one the
 * chain is left unfinished.
 */
PD_MUST_CHECK int pd_storage_read_to_stage(pd_storage *st, const char *path, pd_stage *chain,
                                           pd_err *err);

/*
 * Reads a small object (metadata: repo.json, manifest.json) whole. An object
 * larger than max bytes is PD_ECORRUPT (metadata that large is damaged or
 * not ours). On success *buf (owned by the caller, pd_free) holds *len bytes
 * followed by a NUL, so text can be parsed directly; on failure *buf is NULL.
 */
PD_MUST_CHECK int pd_storage_read_all(pd_storage *st, const char *path, size_t max, char **buf,
                                      size_t *len, pd_err *err);

/*
 * Starts writing the object at path; nothing is visible at path until
 * pd_writer_commit(). opts may be NULL (defaults). *out is owned by the
 * caller (pd_writer_free), NULL on failure, and must not outlive st.
 */
PD_MUST_CHECK int pd_storage_open_write(pd_writer **out, pd_storage *st, const char *path,
                                        const pd_writer_opts *opts, pd_err *err);

/*
 * Appends len bytes. A full repository is PD_EIO with `repository "<repo>"
 * is full: could not write "<path>": no space left on device` and the hint
 * `free space or run pgdrill expire`. Errors are sticky: after one, write and
 * commit return the same code and message. Not callable after commit.
 */
PD_MUST_CHECK int pd_writer_write(pd_writer *w, const void *buf, size_t len, pd_err *err);

/*
 * Makes the object visible at its path, whole and durable, replacing an
 * existing object unless opts.no_overwrite (then PD_EEXIST, and the existing
 * object is untouched). Once, and only while no write failed. A failed
 * commit is not retried: the object is failed, free the writer and start
 * again.
 */
PD_MUST_CHECK int pd_writer_commit(pd_writer *w, pd_err *err);

/* Frees w, discarding everything written unless it was committed; NULL is fine. */
void pd_writer_free(pd_writer *w);

/*
 * A sink stage writing everything it receives into w, for the end of a stage
 * chain. w stays owned by the caller, who commits it after the chain's
 * finish succeeds (the sink's finish does not commit) and frees it after the
 * chain. The stage belongs to the chain (pd_stage_free).
 */
pd_stage *pd_storage_writer_stage(pd_writer *w);

/*
 * Calls fn for every object under prefix ("" for the whole repository),
 * recursively, in no particular order. prefix names a directory-like level:
 * "main/wal" lists "main/wal/..." but not an object "main/wal" itself. A
 * missing prefix lists nothing and is not an error. Temporary files of
 * unfinished writers are never listed, nor is anything else whose path
 * pd_storage_check_path() would refuse (it could not be opened).
 */
PD_MUST_CHECK int pd_storage_list(pd_storage *st, const char *prefix, pd_storage_list_fn fn,
                                  void *payload, pd_err *err);

/*
 * Size and time of the object at path; out->path is path (borrowed from the
 * caller). PD_ENOTFOUND (message as for open_read) when it does not exist.
 */
PD_MUST_CHECK int pd_storage_stat(pd_storage *st, const char *path, pd_storage_entry *out,
                                  pd_err *err);

/* Sets *exists; errors are those of stat other than PD_ENOTFOUND. */
PD_MUST_CHECK int pd_storage_exists(pd_storage *st, const char *path, bool *exists, pd_err *err);

/* Removes the object at path, durably; a missing object is success. */
PD_MUST_CHECK int pd_storage_remove(pd_storage *st, const char *path, pd_err *err);

/*
 * Removes the objects at paths[0..n), durably; missing ones are success.
 * Cheaper than one remove each (one directory fsync per directory, or S3
 * DeleteObjects of up to 1000 keys a request). Not atomic and in no given
 * order: after a failure any of them may be gone.
 */
PD_MUST_CHECK int pd_storage_remove_many(pd_storage *st, const char *const *paths, size_t n,
                                         pd_err *err);

/*
 * Removes every object under prefix (a non-empty path, as for list), and
 * leftovers of unfinished writers with them; a missing prefix is success.
 * Not atomic: after a failure part of the prefix may be gone.
 */
PD_MUST_CHECK int pd_storage_remove_prefix(pd_storage *st, const char *prefix, pd_err *err);

/*
 * Bytes available to pgdrill in the repository, for capacity checks.
 * PD_ENOTIMPL for drivers without such a notion (S3).
 */
PD_MUST_CHECK int pd_storage_free_space(pd_storage *st, uint64_t *bytes, pd_err *err);

/* ---- for drivers ---- */

/*
 * Driver ops. Paths reaching them are checked already. Messages name the
 * path and the repository and say the cause in words; the driver that knows
 * the cause writes them.
 */
typedef struct pd_storage_ops {
    const char *name; /* "posix", "s3" */
    int (*open_read)(pd_reader **out, pd_storage *st, const char *path, pd_err *err);
    int (*open_write)(pd_writer **out, pd_storage *st, const char *path, const pd_writer_opts *opts,
                      pd_err *err);
    int (*list)(pd_storage *st, const char *prefix, pd_storage_list_fn fn, void *payload,
                pd_err *err);
    /* PD_ENOTFOUND when missing; fills size and mtime. */
    int (*stat)(pd_storage *st, const char *path, pd_storage_entry *out, pd_err *err);
    /* Missing is success. */
    int (*remove)(pd_storage *st, const char *path, pd_err *err);
    /* May be NULL: then remove one by one. */
    int (*remove_many)(pd_storage *st, const char *const *paths, size_t n, pd_err *err);
    /* May be NULL: then list + remove. */
    int (*remove_prefix)(pd_storage *st, const char *prefix, pd_err *err);
    /* May be NULL: then PD_ENOTIMPL. */
    int (*free_space)(pd_storage *st, uint64_t *bytes, pd_err *err);
    /* Frees the driver's own resources (not repo, not the struct). */
    void (*free)(pd_storage *st);
} pd_storage_ops;

/* Drivers embed this first in their struct, set up by pd_storage_init(). */
struct pd_storage {
    const pd_storage_ops *ops;
    char *repo; /* as the user wrote it, for messages */
};

typedef struct pd_reader_ops {
    /* At most len bytes; *nread 0 only at the end. */
    int (*read)(pd_reader *r, void *buf, size_t len, size_t *nread, pd_err *err);
    /* Frees the driver's own resources (not path, not the struct). */
    void (*free)(pd_reader *r);
} pd_reader_ops;

struct pd_reader {
    const pd_reader_ops *ops;
    pd_storage *st; /* borrowed */
    char *path;
};

typedef struct pd_writer_ops {
    /* All len bytes (len > 0), or an error. */
    int (*write)(pd_writer *w, const void *buf, size_t len, pd_err *err);
    int (*commit)(pd_writer *w, pd_err *err);
    /* Discards the object unless committed is set; frees the driver's own resources. */
    void (*free)(pd_writer *w);
} pd_writer_ops;

struct pd_writer {
    const pd_writer_ops *ops;
    pd_storage *st; /* borrowed */
    char *path;
    pd_writer_opts opts;
    bool committed; /* commit succeeded */
    int rc;         /* sticky failure code, 0 while healthy */
    pd_err failure; /* the message of the sticky failure */
};

/* Initialisers of the embedded bases; they copy repo and path. */
void pd_storage_init(pd_storage *st, const pd_storage_ops *ops, const char *repo);
void pd_reader_init(pd_reader *r, const pd_reader_ops *ops, pd_storage *st, const char *path);
void pd_writer_init(pd_writer *w, const pd_writer_ops *ops, pd_storage *st, const char *path,
                    const pd_writer_opts *opts);

/* The message of a missing object, shared by the drivers. */
int pd_storage_err_notfound(pd_err *err, const pd_storage *st, const char *path);

/*
 * Driver constructors, called by pd_storage_open() only. posix: root is an
 * absolute directory path, repo the setting as written (for messages).
 */
PD_MUST_CHECK int pd_storage_posix_open(pd_storage **out, const char *root, const char *repo,
                                        pd_err *err);

#endif
