/*
 * JSON on jansson: output documents for --json (one document on stdout,
 * stable field order, sizes as integers, times in RFC 3339 UTC) and bounded
 * parsing of documents read from outside (repository metadata, HTTP bodies).
 */
#ifndef PGDRILL_COMMON_JSON_H
#define PGDRILL_COMMON_JSON_H

#include <jansson.h>
#include <stdio.h>
#include <time.h>

#include "common/err.h"

/* Routes jansson's allocations through pd_malloc; call once at start. */
void pd_json_init(void);

/* Writes doc, indented, with a final newline. PD_EIO if the stream fails. */
PD_MUST_CHECK int pd_json_print(FILE *out, const json_t *doc, pd_err *err);

/* A new JSON string holding t in RFC 3339 UTC ("2026-11-24T02:00:00Z"). */
json_t *pd_json_time(time_t t);

/*
 * Parses len bytes (at most max) as one JSON document into *out. what names
 * the document in errors ("manifest \"backups/X/manifest.json\""). A document
 * over max bytes or malformed is PD_ECORRUPT, naming line and column.
 */
PD_MUST_CHECK int pd_json_parse(json_t **out, const char *buf, size_t len, size_t max,
                                const char *what, pd_err *err);

#endif
