/* Progress line (see progress.h). Redrawn at most 4 times a second. */
#include "common/progress.h"

#include <stdio.h>
#include <string.h>

#include "common/fmt.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"

#define REDRAW_INTERVAL 0.25

struct pd_progress {
    char *label;
    uint64_t total;
    uint64_t done;
    double start;
    double last_draw;
    int enabled;
};

pd_progress *
pd_progress_new(const char *label, uint64_t total)
{
    pd_progress *p = pd_calloc(1, sizeof(*p));

    p->label = pd_strdup(label);
    p->total = total;
    p->start = pd_time_mono();
    p->enabled = pd_log_stderr_is_tty() && !pd_log_quiet();
    return p;
}

char *
pd_progress_format(const pd_progress *p, double now, char *buf, size_t bufsize)
{
    char done[PD_FMT_BUF], total[PD_FMT_BUF], rate[PD_FMT_BUF], eta[PD_FMT_BUF];
    double elapsed = now - p->start;

    pd_fmt_size(done, sizeof(done), p->done);
    pd_fmt_rate(rate, sizeof(rate), p->done, elapsed);
    if (p->total > 0 && p->done > 0 && p->done <= p->total && elapsed > 0) {
        double left = (double)(p->total - p->done) * elapsed / (double)p->done;
        snprintf(buf, bufsize, "%s: %s of %s (%d%%), %s, %s left", p->label, done,
                 pd_fmt_size(total, sizeof(total), p->total),
                 (int)(100.0 * (double)p->done / (double)p->total), rate,
                 pd_fmt_duration(eta, sizeof(eta), left));
    } else {
        snprintf(buf, bufsize, "%s: %s, %s", p->label, done, rate);
    }
    return buf;
}

void
pd_progress_update(pd_progress *p, uint64_t done)
{
    char line[512], clean[512];
    double now;

    p->done = done;
    if (!p->enabled)
        return;
    now = pd_time_mono();
    if (now - p->last_draw < REDRAW_INTERVAL)
        return;
    p->last_draw = now;
    pd_progress_format(p, now, line, sizeof(line));
    pd_redact(line, clean, sizeof(clean));
    fprintf(stderr, "\r\033[K%s", clean);
    fflush(stderr);
    pd_log_set_progress_shown(true);
}

void
pd_progress_free(pd_progress *p)
{
    if (p == NULL)
        return;
    if (p->enabled && p->last_draw > 0) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        pd_log_set_progress_shown(false);
    }
    pd_free(p->label);
    pd_free(p);
}
