/* Client programs as children (see pgtool.h). */
#include "common/pgtool.h"

#include <stdio.h>
#include <string.h>

#include "common/mem.h"

void
pd_pgtool_env_init(pd_pgtool_env *e, const pd_pg_opts *po)
{
    int n = 0;

    memset(e, 0, sizeof(*e));
    if (po->host) {
        snprintf(e->host, sizeof(e->host), "PGHOST=%s", po->host);
        e->env[n++] = e->host;
    }
    if (po->port > 0) {
        snprintf(e->port, sizeof(e->port), "PGPORT=%ld", po->port);
        e->env[n++] = e->port;
    }
    if (po->user) {
        snprintf(e->user, sizeof(e->user), "PGUSER=%s", po->user);
        e->env[n++] = e->user;
    }
    if (po->options) {
        snprintf(e->options, sizeof(e->options), "PGOPTIONS=%s", po->options);
        e->env[n++] = e->options;
    }
    e->env[n++] = "PGDATABASE";
    e->env[n++] = "PGAPPNAME=pgdrill";
    e->env[n] = NULL;
}

char *
pd_pgtool_conninfo(const char *dbname)
{
    size_t n = strlen(dbname);
    char *out = pd_malloc(2 * n + sizeof("dbname=''")), *q = out;

    memcpy(q, "dbname='", 8);
    q += 8;
    for (const char *p = dbname; *p; p++) {
        if (*p == '\'' || *p == '\\')
            *q++ = '\\';
        *q++ = *p;
    }
    *q++ = '\'';
    *q = '\0';
    return out;
}

static void
append(char *buf, size_t bufsize, const char *line, size_t len)
{
    size_t have = strlen(buf);

    if (have > 0 && have + 2 < bufsize) {
        memcpy(buf + have, "; ", 3);
        have += 2;
    }
    if (have + 1 >= bufsize)
        return;
    if (len > bufsize - have - 1)
        len = bufsize - have - 1;
    memcpy(buf + have, line, len);
    buf[have + len] = '\0';
}

void
pd_pgtool_errors(const char *text, char *buf, size_t bufsize)
{
    const char *last = NULL;
    size_t last_len = 0;

    buf[0] = '\0';
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        if (len > 0) {
            // "pg_dump: error: ..." and the server's "ERROR:  ..." inside it.
            const char *hit = memmem(p, len, "error:", 6);
            if (hit == NULL)
                hit = memmem(p, len, "ERROR:", 6);
            if (hit)
                append(buf, bufsize, p, len);
            last = p;
            last_len = len;
        }
        p += len;
        if (*p == '\n')
            p++;
    }
    if (buf[0] == '\0' && last)
        append(buf, bufsize, last, last_len);
}
