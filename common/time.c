/* Clocks and time formats (see time.h). */
#include "common/time.h"

#include <stdio.h>

double
pd_time_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *
pd_time_rfc3339(char *buf, size_t bufsize, time_t t)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    if (strftime(buf, bufsize, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && bufsize > 0)
        buf[0] = '\0';
    return buf;
}

char *
pd_time_id(char *buf, size_t bufsize, time_t t)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    if (strftime(buf, bufsize, "%Y%m%dT%H%M%SZ", &tm) == 0 && bufsize > 0)
        buf[0] = '\0';
    return buf;
}
