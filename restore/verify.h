/*
 * Verifying a backup without restoring it: every object read back through
 * decryption and decompression (both SHA-256s and every frame's tag), and
 * every file inside the tar objects checked against PostgreSQL's own
 * backup_manifest (size and CRC-32C), as pg_verifybackup would, so damage
 * inside a tar entry is found even if an object's hashes were recomputed.
 */
#ifndef PGDRILL_RESTORE_VERIFY_H
#define PGDRILL_RESTORE_VERIFY_H

#include <jansson.h>

#include "common/err.h"
#include "storage/repo.h"

typedef struct pd_verify_result {
    unsigned objects;  /* objects read */
    unsigned files;    /* files checked against backup_manifest */
    unsigned problems; /* each one logged as an error line */
    uint64_t bytes;    /* plaintext bytes read */
} pd_verify_result;

/*
 * Verifies one backup; every problem is logged (one line each) and counted,
 * then PD_ECORRUPT if there was any. Other failures (I/O) stop at once.
 */
PD_MUST_CHECK int pd_verify_backup(pd_verify_result *res, pd_repo *r, json_t *manifest,
                                   pd_err *err);

/* Parses an object description from a manifest's "objects" entry. */
PD_MUST_CHECK int pd_verify_object_info(pd_object_info *info, json_t *o);

#endif
