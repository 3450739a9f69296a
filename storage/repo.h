/*
 * A cluster's repository: <repo>/<cluster>/repo.json (format, cipher,
 * compression, KDF parameters, the master key's id and check value, a MAC
 * over all of it) and the keyring <repo>/<cluster>/keys/<key id>.json of data
 * keys wrapped by the master key. Opening a repository verifies the master
 * key against the check value before anything else is read or written, so a
 * wrong key fails at once (PD_ECONFIG, exit 2).
 */
#ifndef PGDRILL_STORAGE_REPO_H
#define PGDRILL_STORAGE_REPO_H

#include "common/config.h"
#include "common/err.h"
#include "pipeline/keys.h"
#include "pipeline/object.h"
#include "storage/storage.h"

#define PD_REPO_FORMAT       1
#define PD_REPO_JSON_MAX     (64 * 1024)
#define PD_REPO_KEY_JSON_MAX (16 * 1024)

typedef struct pd_repo pd_repo;

typedef struct pd_repo_init_opts {
    const char *generate_key_file;  /* create this key file and use it; NULL: use key-file */
    const pd_scrypt_params *scrypt; /* NULL: PD_SCRYPT_N/R/P and a random salt */
} pd_repo_init_opts;

#define PD_REPO_INIT_OPTS_INIT \
    {                          \
        NULL, NULL             \
    }

/*
 * Creates <repo>/<cluster>/repo.json. PD_ECONFIG when the repository exists
 * already or the key settings are missing or conflicting; *summary (caller
 * frees) describes what was created for the command's output.
 */
PD_MUST_CHECK int pd_repo_init(char **summary, const pd_config *cfg, const pd_repo_init_opts *opts,
                               pd_err *err);

/* Opens and verifies the cluster's repository (key check, MAC). */
PD_MUST_CHECK int pd_repo_open(pd_repo **out, const pd_config *cfg, pd_err *err);

void pd_repo_free(pd_repo *r);

/* Borrowed: the storage, the cluster's path prefix ("<cluster>/"), settings. */
pd_storage *pd_repo_storage(pd_repo *r);
const char *pd_repo_cluster(const pd_repo *r);
pd_cipher pd_repo_cipher(const pd_repo *r);
pd_compression pd_repo_compression(const pd_repo *r);
int pd_repo_compression_level(const pd_repo *r);
/* zstd worker threads for writing: compression-threads, or one per core when 0. */
int pd_repo_compression_workers(const pd_repo *r);

/*
 * Creates a data key, wraps it under the master key and commits it to the
 * keyring. *key is borrowed from r and valid until pd_repo_free; id is the
 * key id that object headers carry. With encryption off: *key NULL, id zero.
 */
PD_MUST_CHECK int pd_repo_new_data_key(pd_repo *r, const pd_secret **key,
                                       unsigned char id[PD_KEY_ID_SIZE], pd_err *err);

/*
 * Fixes the repository to one cluster: the first backup records the
 * server's system identifier and major version in repo.json; later ones
 * must match, else PD_ECONFIG naming both.
 */
PD_MUST_CHECK int pd_repo_bind_cluster(pd_repo *r, const char *system_identifier,
                                       int pg_version_num, pd_err *err);

/* The system identifier the repository is bound to, or NULL before the first backup. */
const char *pd_repo_system_identifier(const pd_repo *r);

/*
 * Takes the cluster's lock (flock on a local file, so a crashed run never
 * leaves it held): one backup or key rotation at a time. Returns the fd to
 * close when done, or PD_EFAIL naming the holder's pid.
 */
int pd_repo_lock(const pd_config *cfg, pd_err *err);

/*
 * The readers' lock of the cluster (a local file, like pd_repo_lock): shared
 * for restore, drill and verify, which wait while an expire runs; exclusive
 * for expire, which fails at once (PD_EFAIL) while anyone reads. Returns the
 * fd to close when done, or -1 with err set.
 */
int pd_repo_read_lock(const pd_config *cfg, bool exclusive, pd_err *err);

/* pd_key_lookup_fn for object readers: payload is the pd_repo. */
int pd_repo_key_lookup(void *payload, const unsigned char id[PD_KEY_ID_SIZE], const pd_secret **key,
                       pd_err *err);

/*
 * Rewraps every data key under the master key in new_key_file and switches
 * repo.json to it; only metadata is written. Crash-safe (see repo.c): after
 * a kill at any point the repository opens with the old key or the new one,
 * and running the same command again completes the rotation.
 */
PD_MUST_CHECK int pd_repo_rotate(char **summary, const pd_config *cfg, const char *new_key_file,
                                 pd_err *err);

/* What the manifest records of each stored object. */
typedef struct pd_object_info {
    uint64_t size;        /* plaintext bytes */
    uint64_t stored_size; /* bytes in the repository */
    unsigned char sha256[32], stored_sha256[32];
} pd_object_info;

typedef struct pd_objw pd_objw;

/*
 * Opens a new object at name (cluster-relative, e.g. "backups/ID/base.tar",
 * also its identity in the object format) with the chain
 * count+SHA-256 -> [zstd ->] seal -> count+SHA-256 -> storage writer. key
 * and key_id come from pd_repo_new_data_key (NULL with encryption off).
 * no_overwrite: commit fails with PD_EEXIST if the object exists. With
 * compression threads, the storage writer is driven from a thread of the
 * zstd stage's between the first write and commit: until then the caller
 * must not use the repository's storage (one S3 connection) otherwise.
 */
PD_MUST_CHECK int pd_objw_open(pd_objw **out, pd_repo *r, const char *name, const pd_secret *key,
                               const unsigned char *key_id, bool no_overwrite, pd_err *err);

/* The head of the chain: write the object's plaintext here. Borrowed. */
pd_stage *pd_objw_stage(pd_objw *w);

/* Plaintext bytes written so far (progress). */
uint64_t pd_objw_bytes(const pd_objw *w);

/* Finishes the chain and commits the object durably; fills info. */
PD_MUST_CHECK int pd_objw_commit(pd_objw *w, pd_object_info *info, pd_err *err);

/* Frees; an object not committed is discarded (never visible). NULL is fine. */
void pd_objw_free(pd_objw *w);

/* Writes len bytes of buf as the object name and commits it (open, write, commit, free). */
PD_MUST_CHECK int pd_objw_put(pd_repo *r, const char *name, const pd_secret *key,
                              const unsigned char *key_id, bool no_overwrite, const void *buf,
                              size_t len, pd_err *err);

/*
 * Reads object name through count+SHA-256 -> open [-> unzstd] ->
 * count+SHA-256 -> sink, and finishes sink (borrowed: the caller frees it).
 * With expect, sizes and both hashes must match (PD_ECORRUPT naming the
 * object otherwise); got (may be NULL) receives what was read.
 */
PD_MUST_CHECK int pd_objr_read(pd_repo *r, const char *name, const pd_object_info *expect,
                               pd_stage *sink, pd_object_info *got, pd_err *err);

/* Small objects (metadata): reads a whole object of at most max plaintext bytes. */
PD_MUST_CHECK int pd_objr_read_all(pd_repo *r, const char *name, size_t max, char **buf,
                                   size_t *len, pd_err *err);

/* The storage path of a cluster-relative name ("<cluster>/<name>"), a new string. */
char *pd_repo_path(const pd_repo *r, const char *name);

#endif
