/* Recovery target parsing (see target.h). */
#include "restore/target.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int
bad_time(const char *text, pd_err *err)
{
    pd_err_set(err, PD_ECONFIG, "cannot parse target time \"%s\"", text);
    return pd_err_hint(err, "use ISO 8601 or PostgreSQL's form, e.g. 2026-11-24T02:00:00Z or "
                            "'2026-11-24 02:00:00+00'");
}

static bool
digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

int
pd_target_parse_time(int64_t *secs, int32_t *usecs, bool *had_zone, const char *text, pd_err *err)
{
    struct tm tm;
    const char *p = text;
    int y, mo, d, h, mi, s, off = 0;

    memset(&tm, 0, sizeof(tm));
    *usecs = 0;
    *had_zone = false;
    while (*p == ' ')
        p++;
    if (strlen(p) < 19 || !digits(p, 4, &y) || p[4] != '-' || !digits(p + 5, 2, &mo) ||
        p[7] != '-' || !digits(p + 8, 2, &d) || (p[10] != ' ' && p[10] != 'T') ||
        !digits(p + 11, 2, &h) || p[13] != ':' || !digits(p + 14, 2, &mi) || p[16] != ':' ||
        !digits(p + 17, 2, &s))
        return bad_time(text, err);
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
        return bad_time(text, err);
    p += 19;
    if (*p == '.') {
        int n = 0, frac = 0;
        for (p++; isdigit((unsigned char)*p); p++, n++)
            if (n < 6)
                frac = frac * 10 + (*p - '0');
        if (n == 0)
            return bad_time(text, err);
        for (; n < 6; n++)
            frac *= 10;
        *usecs = frac;
    }
    while (*p == ' ')
        p++;
    if (*p == 'Z' || strcmp(p, "UTC") == 0 || strcmp(p, "GMT") == 0) {
        *had_zone = true;
        p += *p == 'Z' ? 1 : 3;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om = 0;
        p++;
        if (!digits(p, 2, &oh))
            return bad_time(text, err);
        p += 2;
        if (*p == ':')
            p++;
        if (isdigit((unsigned char)*p)) {
            if (!digits(p, 2, &om))
                return bad_time(text, err);
            p += 2;
        }
        if (oh > 15 || om > 59)
            return bad_time(text, err);
        off = sign * (oh * 3600 + om * 60);
        *had_zone = true;
    }
    while (*p == ' ')
        p++;
    if (*p != '\0')
        return bad_time(text, err);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    time_t t = timegm(&tm);
    // timegm normalises 2026-02-31 into March: refuse such dates.
    struct tm back;
    gmtime_r(&t, &back);
    if (back.tm_mday != d || back.tm_mon != mo - 1)
        return bad_time(text, err);
    *secs = (int64_t)t - off;
    return 0;
}

int
pd_target_parse_lsn(uint64_t *lsn, const char *text, pd_err *err)
{
    unsigned int hi, lo;
    int n = 0;

    if (sscanf(text, "%8X/%8X%n", &hi, &lo, &n) != 2 || text[n] != '\0') {
        pd_err_set(err, PD_ECONFIG, "cannot parse target LSN \"%s\"", text);
        return pd_err_hint(err, "write it as PostgreSQL prints it, e.g. 0/3000028");
    }
    *lsn = (uint64_t)hi << 32 | lo;
    return 0;
}

void
pd_target_segment_name(char out[25], uint32_t tli, uint64_t lsn, uint64_t seg_size)
{
    uint64_t segno = lsn / seg_size;
    uint64_t per_id = 0x100000000ULL / seg_size;

    snprintf(out, 25, "%08X%08X%08X", tli, (unsigned)(segno / per_id), (unsigned)(segno % per_id));
}
