/*
 * A base backup streamed over libpq's replication protocol (BASE_BACKUP,
 * PostgreSQL 15's single COPY stream with typed messages): no temporary copy
 * of the database on local disk. Archives (base.tar, <tablespace oid>.tar,
 * with the WAL needed for consistency inside base.tar) and the server's
 * backup_manifest are handed to callbacks as they arrive.
 */
#ifndef PGDRILL_BACKUP_BASEBACKUP_H
#define PGDRILL_BACKUP_BASEBACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/pg.h"

#define PD_BB_MAX_TABLESPACES 256

typedef struct pd_bb_tablespace {
    char oid[16];        /* "" for the main data directory */
    char location[1024]; /* "" for the main data directory */
    uint64_t size;       /* bytes, as the server estimated */
} pd_bb_tablespace;

typedef struct pd_bb_info {
    char system_identifier[32];
    int server_version_num; /* e.g. 150018 */
    char server_version[64];
    char start_lsn[32], stop_lsn[32];
    unsigned long timeline, stop_timeline;
    pd_bb_tablespace tablespaces[PD_BB_MAX_TABLESPACES];
    int n_tablespaces;
    uint64_t total_size;        /* sum of the tablespaces' sizes */
    unsigned checksum_failures; /* reported by the server */
} pd_bb_info;

typedef struct pd_bb_callbacks {
    void *payload;
    /* After IDENTIFY_SYSTEM and the start position and tablespaces are known. */
    int (*start)(void *payload, const pd_bb_info *info, pd_err *err);
    /* A new archive ("base.tar", "16385.tar") or, with name "backup_manifest", the manifest. */
    int (*begin)(void *payload, const char *name, const char *location, pd_err *err);
    int (*data)(void *payload, const void *buf, size_t len, pd_err *err);
    /* The current archive or manifest is complete. */
    int (*end)(void *payload, pd_err *err);
    /* Server-reported progress in bytes (for the progress line). */
    void (*progress)(void *payload, uint64_t done);
} pd_bb_callbacks;

typedef struct pd_bb_opts {
    const char *label;
    bool fast_checkpoint;
    bool verify_checksums; /* false: the server does not check page checksums */
} pd_bb_opts;

/*
 * Runs one base backup on a replication connection described by pgopts
 * (replication is forced on). Fills info. Page checksum failures reported
 * by the server make it fail with PD_EPG naming them. The callbacks' errors
 * stop the backup and are returned as they are.
 */
PD_MUST_CHECK int pd_basebackup_run(pd_bb_info *info, const pd_pg_opts *pgopts,
                                    const pd_bb_opts *opts, const pd_bb_callbacks *cb, pd_err *err);

#endif
