/* Human units (see fmt.h). Binary prefixes, one decimal below 100. */
#include "common/fmt.h"

#include <math.h>
#include <stdio.h>

char *
pd_fmt_size(char *buf, size_t bufsize, uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    size_t u = 0;

    if (bytes < 1024) {
        snprintf(buf, bufsize, "%u B", (unsigned)bytes);
        return buf;
    }
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    if (v < 99.95)
        snprintf(buf, bufsize, "%.1f %s", v, units[u]);
    else
        snprintf(buf, bufsize, "%.0f %s", v, units[u]);
    return buf;
}

char *
pd_fmt_duration(char *buf, size_t bufsize, double seconds)
{
    if (!(seconds >= 0.0) || isinf(seconds))
        seconds = 0.0;
    if (seconds < 1.0) {
        snprintf(buf, bufsize, "%dms", (int)(seconds * 1000.0 + 0.5));
    } else if (seconds < 60.0) {
        snprintf(buf, bufsize, "%.1fs", seconds);
    } else if (seconds < 3600.0) {
        long s = (long)(seconds + 0.5);
        snprintf(buf, bufsize, "%ldm%02lds", s / 60, s % 60);
    } else {
        long m = (long)(seconds / 60.0 + 0.5);
        snprintf(buf, bufsize, "%ldh%02ldm", m / 60, m % 60);
    }
    return buf;
}

char *
pd_fmt_rate(char *buf, size_t bufsize, uint64_t bytes, double seconds)
{
    char size[PD_FMT_BUF];

    if (seconds <= 0.0)
        seconds = 1e-9;
    pd_fmt_size(size, sizeof(size), (uint64_t)((double)bytes / seconds));
    snprintf(buf, bufsize, "%s/s", size);
    return buf;
}
