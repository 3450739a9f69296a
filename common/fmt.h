/*
 * Human units for logs and reports: sizes in B/KiB/MiB/GiB/TiB, durations
 * like "350ms", "4.2s", "4m12s", "2h05m", rates like "840 MiB/s". --json
 * output uses raw integers instead.
 */
#ifndef PGDRILL_COMMON_FMT_H
#define PGDRILL_COMMON_FMT_H

#include <stddef.h>
#include <stdint.h>

#define PD_FMT_BUF 32

/* Each writes into buf (at least PD_FMT_BUF bytes is always enough) and returns buf. */
char *pd_fmt_size(char *buf, size_t bufsize, uint64_t bytes);
char *pd_fmt_duration(char *buf, size_t bufsize, double seconds);
char *pd_fmt_rate(char *buf, size_t bufsize, uint64_t bytes, double seconds);

#endif
