/*
 * Reading pg_dump's custom-format archive as it streams past, to count the
 * rows of every table in it: a logical backup records those counts for its
 * drills without a second scan of any table on the server.
 *
 * The scanner understands what pg_dump 15 writes (archive version 1.14,
 * uncompressed: pgdrill runs pg_dump with --compress=0): the header, the
 * table of contents (for each TABLE DATA entry its COPY statement, whose
 * quoted name pg_dump made), then the data blocks, where a table's rows are
 * COPY text lines, one newline each (a newline inside a value is written
 * as \n). Anything else (another version, compression, a format it does
 * not follow) makes pd_dumpscan_ok() false, and the caller counts another
 * way: a scanner never guesses.
 *
 * Memory: a few hundred bytes per table of the dump (at most
 * PD_DUMPSCAN_MAX_TABLES), independent of the data's size; feeding never
 * fails and never changes the bytes, which go on to the repository as they
 * are.
 */
#ifndef PGDRILL_BACKUP_DUMPSCAN_H
#define PGDRILL_BACKUP_DUMPSCAN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define PD_DUMPSCAN_MAX_TABLES 100000
#define PD_DUMPSCAN_NAME_MAX   520 /* a quoted schema.table: 2 * (2 * 63 + 2) + 1, with room */

typedef struct pd_dumpscan pd_dumpscan;

pd_dumpscan *pd_dumpscan_new(void);

/* The next len bytes of the archive. */
void pd_dumpscan_feed(pd_dumpscan *s, const void *buf, size_t len);

/*
 * After the whole archive: true when it was read to the end of its data as
 * a known archive. Otherwise why (in words, for a log line) goes into buf.
 */
bool pd_dumpscan_ok(const pd_dumpscan *s, char *why, size_t whysize);

/*
 * The max tables with the most data bytes, largest first, as a new array
 * [{database, table, rows, changes: 0}], table being the name as pg_dump
 * quoted it ("public.orders", "\"Odd\".t"). Only after pd_dumpscan_ok().
 */
json_t *pd_dumpscan_counts(const pd_dumpscan *s, const char *database, size_t max);

void pd_dumpscan_free(pd_dumpscan *s);

#endif
