/*
 * Writing restored data to local files: a write loop that survives EINTR and
 * short writes, and a sink stage over it. Used by restore (backup_manifest,
 * recovery settings) and archive-get (the WAL file's temp file).
 */
#ifndef PGDRILL_RESTORE_FDIO_H
#define PGDRILL_RESTORE_FDIO_H

#include <stddef.h>

#include "common/err.h"
#include "pipeline/stage.h"

/* Writes all len bytes to fd; PD_EIO naming what on failure. */
PD_MUST_CHECK int pd_fdio_write_all(int fd, const void *buf, size_t len, const char *what,
                                    pd_err *err);

/* A sink writing into *fd (borrowed, like what: both must outlive the stage). */
pd_stage *pd_fdio_sink_new(const int *fd, const char *what);

#endif
