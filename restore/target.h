/*
 * Recovery targets: parsing what an engineer types under pressure
 * (ISO 8601 and PostgreSQL's own timestamp forms, LSNs, XIDs) into values
 * pgdrill can compare with backups and the archive before anything is
 * written.
 */
#ifndef PGDRILL_RESTORE_TARGET_H
#define PGDRILL_RESTORE_TARGET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/*
 * Parses a timestamp: "2026-11-24 02:00:00", "2026-11-24T02:00:00.25Z",
 * "2026-11-24 02:00:00+01", "...+05:30", "... UTC". Without a zone it is
 * UTC (*had_zone false). Fills seconds and microseconds since the epoch.
 * PD_ECONFIG naming the text otherwise.
 */
PD_MUST_CHECK int pd_target_parse_time(int64_t *secs, int32_t *usecs, bool *had_zone,
                                       const char *text, pd_err *err);

/* "16/B374D848" into a 64-bit LSN; PD_ECONFIG otherwise. */
PD_MUST_CHECK int pd_target_parse_lsn(uint64_t *lsn, const char *text, pd_err *err);

/* The WAL segment name holding lsn on timeline tli (16 MiB segments). */
void pd_target_segment_name(char out[25], uint32_t tli, uint64_t lsn, uint64_t seg_size);

#endif
