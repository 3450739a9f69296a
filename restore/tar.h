/*
 * Reading tar streams from a stage chain with libarchive: a pull consumer
 * (pipeline/stage.h) runs libarchive's reader on the chain's output, so a
 * tar object is verified or extracted while it is decrypted, in constant
 * memory.
 */
#ifndef PGDRILL_RESTORE_TAR_H
#define PGDRILL_RESTORE_TAR_H

#include <archive.h>
#include <archive_entry.h>

#include "common/err.h"
#include "pipeline/stage.h"

/* Called per entry; read the entry's data with archive_read_data_block(a, ...). */
typedef int (*pd_tar_entry_fn)(void *payload, struct archive *a, struct archive_entry *e,
                               pd_err *err);

/*
 * A sink stage that parses the tar stream written into it and calls fn for
 * every entry; what names the archive in messages. Damage in the tar
 * structure is PD_ECORRUPT. The result of finish is fn's or libarchive's.
 */
pd_stage *pd_tar_reader_new(const char *what, pd_tar_entry_fn fn, void *payload);

#endif
