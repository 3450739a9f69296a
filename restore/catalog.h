/*
 * The backups of a cluster as the repository holds them: every directory
 * under backups/ is a backup; it is complete only when its manifest.json
 * exists and decrypts (the commit). Incomplete backups are listed as such
 * and never restored.
 */
#ifndef PGDRILL_RESTORE_CATALOG_H
#define PGDRILL_RESTORE_CATALOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "storage/repo.h"

typedef struct pd_backup_entry {
    char id[64];
    bool complete;
    json_t *manifest;     /* complete backups: the decrypted manifest.json (owned) */
    uint64_t stored_size; /* bytes under backups/<id>/ in the repository */
} pd_backup_entry;

/* All backups, oldest first. A manifest that does not read is PD_ECORRUPT. */
PD_MUST_CHECK int pd_catalog_list(pd_backup_entry **out, size_t *n, pd_repo *r, pd_err *err);

void pd_catalog_free(pd_backup_entry *entries, size_t n);

/*
 * The complete backup named by spec: an ID or "latest" (NULL means latest).
 * An unknown ID, an incomplete backup or an empty repository is PD_ECONFIG
 * (exit 2) with a message saying so. *manifest is owned by the caller.
 */
PD_MUST_CHECK int pd_catalog_find(json_t **manifest, pd_repo *r, const char *spec, pd_err *err);

/* Loads backups/<id>/manifest.json. */
PD_MUST_CHECK int pd_catalog_load_manifest(json_t **manifest, pd_repo *r, const char *id,
                                           pd_err *err);

#endif
