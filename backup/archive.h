/*
 * WAL archiving: archive-push (PostgreSQL's archive_command) and the naming
 * of archived WAL, shared with archive-get (restore/).
 */
#ifndef PGDRILL_BACKUP_ARCHIVE_H
#define PGDRILL_BACKUP_ARCHIVE_H

#include <stdbool.h>

#include "common/config.h"
#include "common/err.h"

#define PD_WAL_SEGMENT_MAX (1024 * 1024 * 1024) /* PostgreSQL's largest wal_segment_size */

/*
 * The cluster-relative object name of an archived WAL file name (a segment,
 * a .partial segment, a .backup file or a timeline .history file), or NULL
 * when name is none of these. The caller frees it.
 */
char *pd_wal_object_name(const char *name);

/*
 * Archives one file (path absolute or relative to the current directory,
 * PostgreSQL's data directory). Returns 0 only once the object is durably
 * stored, or when the same content is archived already. Different content
 * under the same name is PD_EEXIST and is never overwritten; a segment of
 * another cluster (system identifier in its page header) is PD_ECONFIG.
 */
PD_MUST_CHECK int pd_archive_push(const pd_config *cfg, const char *path, pd_err *err);

#endif
