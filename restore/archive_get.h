/* archive-get: PostgreSQL's restore_command. */
#ifndef PGDRILL_RESTORE_ARCHIVE_GET_H
#define PGDRILL_RESTORE_ARCHIVE_GET_H

#include "common/config.h"
#include "common/err.h"
#include "storage/repo.h"

/*
 * Fetches archived WAL file name into path through a temp file in the same
 * directory, fsync and rename, so path is never an incomplete or unverified
 * file. PD_ENOTFOUND when the archive does not have it (normal at the end of
 * recovery); PD_ECORRUPT for a damaged or undecryptable object.
 */
PD_MUST_CHECK int pd_archive_get(const pd_config *cfg, const char *name, const char *path,
                                 pd_err *err);

/* The same from a repository already open (a drill fetching many files). */
PD_MUST_CHECK int pd_archive_get_from(pd_repo *r, const char *name, const char *path, pd_err *err);

#endif
