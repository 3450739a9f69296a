/*
 * Growth rates, the capacity forecast's inputs and threshold states (see
 * health.h). Every state comes with one message an operator can act on and
 * Nagios perfdata ('label'=value[UOM];warn;crit;min;max, ages in s, sizes
 * in B); a value that is not known has no perfdata, never a made-up 0.
 */
#include "drills/health.h"

#include <stdio.h>
#include <string.h>

#include "common/fmt.h"

void
pd_health_rate_add(pd_health_rate *r, int64_t t, uint64_t bytes)
{
    if (r->n == 0 || t < r->t_first) {
        r->t_first = t;
        r->bytes_first = bytes;
    } else if (t == r->t_first) {
        r->bytes_first += bytes;
    }
    if (r->n == 0 || t > r->t_last)
        r->t_last = t;
    r->bytes += bytes;
    r->n++;
}

bool
pd_health_rate_per_day(const pd_health_rate *r, double *per_day)
{
    *per_day = 0;
    if (r->n < 2 || r->t_last <= r->t_first)
        return false;
    *per_day = (double)(r->bytes - r->bytes_first) * 86400.0 / (double)(r->t_last - r->t_first);
    return true;
}

const char *
pd_health_state_name(pd_health_state s)
{
    static const char *const names[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};

    return names[s];
}

void
pd_health_limits_from_config(pd_health_limits *l, const pd_config *cfg)
{
    pd_config_get_limits(cfg, "alert-backup-age", &l->backup_age[0], &l->backup_age[1]);
    pd_config_get_limits(cfg, "alert-archive-lag", &l->archive_lag[0], &l->archive_lag[1]);
    pd_config_get_limits(cfg, "alert-drill-age", &l->drill_age[0], &l->drill_age[1]);
    pd_config_get_limits(cfg, "alert-repository-days", &l->repository_days[0],
                         &l->repository_days[1]);
}

/* An age for messages: 45s, 12m05s, 26h00m, 8d03h. */
static char *
age_text(char *buf, size_t size, double seconds)
{
    long s = seconds > 0 ? (long)(seconds + 0.5) : 0;

    if (s < 60)
        snprintf(buf, size, "%lds", s);
    else if (s < 3600)
        snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
    else if (s < 2 * 86400)
        snprintf(buf, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else
        snprintf(buf, size, "%ldd%02ldh", s / 86400, s / 3600 % 24);
    return buf;
}

/* The state of an age (larger is worse) or of a number of days (smaller is worse). */
static pd_health_state
against(double value, const long lim[2], bool smaller_is_worse)
{
    if (smaller_is_worse) {
        if (lim[1] >= 0 && value < (double)lim[1])
            return PD_HEALTH_CRITICAL;
        if (lim[0] >= 0 && value < (double)lim[0])
            return PD_HEALTH_WARNING;
        return PD_HEALTH_OK;
    }
    if (lim[1] >= 0 && value > (double)lim[1])
        return PD_HEALTH_CRITICAL;
    if (lim[0] >= 0 && value > (double)lim[0])
        return PD_HEALTH_WARNING;
    return PD_HEALTH_OK;
}

/* ";warn;crit" of perfdata: an unset level is empty. */
static void
levels(char *buf, size_t size, const long lim[2])
{
    char w[24] = "", c[24] = "";

    if (lim[0] >= 0)
        snprintf(w, sizeof(w), "%ld", lim[0]);
    if (lim[1] >= 0)
        snprintf(c, sizeof(c), "%ld", lim[1]);
    snprintf(buf, size, ";%s;%s", w, c);
}

/* " (warning over 26h)" for a state past a threshold, else "". */
static void
why(char *buf, size_t size, pd_health_state s, const long lim[2], bool days)
{
    char d[PD_FMT_BUF];
    long v = s == PD_HEALTH_CRITICAL ? lim[1] : lim[0];

    buf[0] = '\0';
    if (s != PD_HEALTH_WARNING && s != PD_HEALTH_CRITICAL)
        return;
    if (days)
        snprintf(d, sizeof(d), "%ld days", v);
    else
        age_text(d, sizeof(d), (double)v);
    snprintf(buf, size, " (%s %s %s)", s == PD_HEALTH_CRITICAL ? "critical" : "warning",
             days ? "under" : "over", d);
}

static void add(json_t *items, const char *name, pd_health_state s, const char *message,
                const char *perf);

/* True (and an OK item) when both levels of the key are off: the operator chose not to check. */
static bool
off(json_t *items, const char *name, const char *key, const long lim[2])
{
    char msg[128];

    if (lim[0] >= 0 || lim[1] >= 0)
        return false;
    snprintf(msg, sizeof(msg), "not checked (%s = off)", key);
    add(items, name, PD_HEALTH_OK, msg, "");
    return true;
}

static void
add(json_t *items, const char *name, pd_health_state s, const char *message, const char *perf)
{
    json_t *it = json_object();

    json_object_set_new(it, "name", json_string(name));
    json_object_set_new(it, "state", json_string(pd_health_state_name(s)));
    json_object_set_new(it, "message", json_string(message));
    json_object_set_new(it, "perfdata", json_string(perf));
    json_array_append_new(items, it);
}

static pd_health_state
eval_backup(json_t *items, json_t *st, const pd_health_limits *l)
{
    json_t *lb = json_object_get(st, "last_backup");
    json_t *age = json_object_get(lb, "age_seconds");
    char msg[512], w[128], d[PD_FMT_BUF], perf[128], lv[64];
    pd_health_state s;

    if (off(items, "backup", "alert-backup-age", l->backup_age))
        return PD_HEALTH_OK;
    if (!json_is_object(lb) || !json_is_integer(age)) {
        add(items, "backup", PD_HEALTH_CRITICAL, "no complete backup: run pgdrill backup", "");
        return PD_HEALTH_CRITICAL;
    }
    json_int_t a = json_integer_value(age);
    s = against((double)a, l->backup_age, false);
    why(w, sizeof(w), s, l->backup_age, false);
    age_text(d, sizeof(d), (double)a);
    const char *id = json_string_value(json_object_get(lb, "id")) ?: "?";
    const char *gap = json_string_value(json_object_get(lb, "wal_gap"));
    // The gap is measured from the newest physical backup (a logical one may be newer).
    const char *from = json_string_value(json_object_get(lb, "wal_gap_backup")) ?: id;
    if (gap && strcmp(from, id) != 0) {
        s = PD_HEALTH_CRITICAL;
        snprintf(msg, sizeof(msg),
                 "last backup %s %s ago, but WAL after physical backup %s has a gap at %s: take "
                 "a new physical backup",
                 id, d, from, gap);
    } else if (gap) {
        s = PD_HEALTH_CRITICAL;
        snprintf(msg, sizeof(msg),
                 "last backup %s %s ago, but WAL after it has a gap at %s: take a new backup", id,
                 d, gap);
    } else {
        snprintf(msg, sizeof(msg), "last backup %s %s ago%s", id, d, w);
    }
    levels(lv, sizeof(lv), l->backup_age);
    snprintf(perf, sizeof(perf), "'backup_age'=%llds%s;0;", (long long)a, lv);
    add(items, "backup", s, msg, perf);
    return s;
}

static pd_health_state
eval_archive(json_t *items, json_t *st, const pd_health_limits *l)
{
    json_t *wal = json_object_get(st, "wal");
    json_t *age = json_object_get(wal, "age_seconds");
    json_t *lag = json_object_get(wal, "lag_bytes");
    json_t *segsize = json_object_get(wal, "segment_size");
    char msg[512], w[128], d[PD_FMT_BUF], sz[PD_FMT_BUF], perf[192], lv[64];
    pd_health_state s;

    if (off(items, "archive", "alert-archive-lag", l->archive_lag))
        return PD_HEALTH_OK;
    if (!json_is_integer(age)) {
        add(items, "archive", PD_HEALTH_WARNING,
            "no WAL file archived: set archive_command to pgdrill archive-push", "");
        return PD_HEALTH_WARNING;
    }
    json_int_t a = json_integer_value(age);
    bool current = json_is_integer(lag) && json_is_integer(segsize) &&
                   json_integer_value(lag) < json_integer_value(segsize);
    s = current ? PD_HEALTH_OK : against((double)a, l->archive_lag, false);
    why(w, sizeof(w), s, l->archive_lag, false);
    age_text(d, sizeof(d), (double)a);
    const char *name = json_string_value(json_object_get(wal, "last_archived")) ?: "?";
    if (json_is_integer(lag)) {
        pd_fmt_size(sz, sizeof(sz), (uint64_t)json_integer_value(lag));
        snprintf(msg, sizeof(msg), "newest WAL file %s archived %s ago, %s behind the server%s%s",
                 name, d, sz, current ? " (current)" : "", w);
    } else {
        snprintf(msg, sizeof(msg), "newest WAL file %s archived %s ago%s", name, d, w);
    }
    levels(lv, sizeof(lv), l->archive_lag);
    int n = snprintf(perf, sizeof(perf), "'archive_age'=%llds%s;0;", (long long)a, lv);
    if (json_is_integer(lag) && n > 0 && (size_t)n < sizeof(perf))
        snprintf(perf + n, sizeof(perf) - (size_t)n, " 'archive_lag'=%lldB;;;0;",
                 (long long)json_integer_value(lag));
    add(items, "archive", s, msg, perf);
    return s;
}

static pd_health_state
eval_drill(json_t *items, json_t *st, const pd_health_limits *l)
{
    json_t *ld = json_object_get(st, "last_drill");
    json_t *stop = json_object_get(ld, "stop_timestamp");
    json_t *now = json_object_get(st, "timestamp");
    char msg[768], w[128], d[PD_FMT_BUF], perf[192], lv[64];
    pd_health_state s;

    if (off(items, "drill", "alert-drill-age", l->drill_age))
        return PD_HEALTH_OK;
    if (!json_is_object(ld) || !json_is_integer(stop) || !json_is_integer(now)) {
        add(items, "drill", PD_HEALTH_WARNING,
            "no drill yet: no backup is proven to restore; run pgdrill drill", "");
        return PD_HEALTH_WARNING;
    }
    json_int_t a = json_integer_value(now) - json_integer_value(stop);
    if (a < 0)
        a = 0;
    s = against((double)a, l->drill_age, false);
    why(w, sizeof(w), s, l->drill_age, false);
    age_text(d, sizeof(d), (double)a);
    const char *id = json_string_value(json_object_get(ld, "id")) ?: "?";
    const char *result = json_string_value(json_object_get(ld, "result")) ?: "";
    const char *rto_result = json_string_value(json_object_get(ld, "rto_result"));
    double rto = json_number_value(json_object_get(ld, "rto_seconds"));
    if (strcmp(result, "pass") != 0) {
        const char *failure = json_string_value(json_object_get(ld, "failure"));
        s = PD_HEALTH_CRITICAL;
        snprintf(msg, sizeof(msg),
                 "last drill %s FAILED %s ago%s%s: the backup is not proven to "
                 "restore; see pgdrill status",
                 id, d, failure ? ": " : "", failure ? failure : "");
    } else if (rto_result && strcmp(rto_result, "exceeded") == 0) {
        if (s < PD_HEALTH_WARNING)
            s = PD_HEALTH_WARNING;
        snprintf(msg, sizeof(msg),
                 "last drill %s passed %s ago but its RTO %.1fs exceeded drill-rto-objective%s", id,
                 d, rto, w);
    } else {
        snprintf(msg, sizeof(msg), "last drill %s passed %s ago, RTO %.1fs%s", id, d, rto, w);
    }
    levels(lv, sizeof(lv), l->drill_age);
    int n = snprintf(perf, sizeof(perf), "'drill_age'=%llds%s;0;", (long long)a, lv);
    // A drill that failed before recovery has no RTO: no perfdata rather than a 0.
    if (json_is_number(json_object_get(ld, "rto_seconds")) && n > 0 && (size_t)n < sizeof(perf))
        snprintf(perf + n, sizeof(perf) - (size_t)n, " 'drill_rto'=%.1fs;;;0;", rto);
    add(items, "drill", s, msg, perf);
    return s;
}

static pd_health_state
eval_repository(json_t *items, json_t *st, const pd_health_limits *l)
{
    json_t *cap = json_object_get(st, "capacity");
    json_t *days = json_object_get(cap, "repository_full_days");
    json_t *free_b = json_object_get(cap, "repository_free_bytes");
    json_int_t size = json_integer_value(json_object_get(st, "repository_size_bytes"));
    char msg[512], w[128], sz[PD_FMT_BUF], fr[PD_FMT_BUF], perf[256], lv[64];
    pd_health_state s = PD_HEALTH_OK;

    pd_fmt_size(sz, sizeof(sz), (uint64_t)size);
    int n = snprintf(perf, sizeof(perf), "'repository_size'=%lldB;;;0;", (long long)size);
    if (json_is_integer(free_b) && n > 0 && (size_t)n < sizeof(perf))
        n += snprintf(perf + n, sizeof(perf) - (size_t)n, " 'repository_free'=%lldB;;;0;",
                      (long long)json_integer_value(free_b));
    if (json_is_number(days)) {
        double v = json_number_value(days);
        s = against(v, l->repository_days, true);
        why(w, sizeof(w), s, l->repository_days, true);
        pd_fmt_size(fr, sizeof(fr), (uint64_t)json_integer_value(free_b));
        snprintf(msg, sizeof(msg),
                 "repository %s, %s free, full in %.1f days at the current "
                 "growth%s",
                 sz, fr, v, w);
        levels(lv, sizeof(lv), l->repository_days);
        if (n > 0 && (size_t)n < sizeof(perf))
            snprintf(perf + n, sizeof(perf) - (size_t)n, " 'repository_days'=%.1f%s;0;", v, lv);
    } else {
        const char *reason = json_string_value(json_object_get(cap, "forecast_unknown")) ?: "";
        snprintf(msg, sizeof(msg), "repository %s, full: unknown (%s)", sz, reason);
    }
    add(items, "repository", s, msg, perf);
    return s;
}

pd_health_state
pd_health_evaluate(json_t **items, json_t *st, const pd_health_limits *l)
{
    json_t *a = json_array();
    pd_health_state worst = PD_HEALTH_OK, s;

    s = eval_backup(a, st, l);
    worst = s > worst ? s : worst;
    s = eval_archive(a, st, l);
    worst = s > worst ? s : worst;
    s = eval_drill(a, st, l);
    worst = s > worst ? s : worst;
    s = eval_repository(a, st, l);
    worst = s > worst ? s : worst;
    *items = a;
    return worst;
}
