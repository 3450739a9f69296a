/* JSON helpers on jansson (see json.h). */
#include "common/json.h"

#include "common/mem.h"
#include "common/time.h"

void
pd_json_init(void)
{
    json_set_alloc_funcs(pd_malloc, pd_free);
}

int
pd_json_print(FILE *out, const json_t *doc, pd_err *err)
{
    if (json_dumpf(doc, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 || fputc('\n', out) == EOF ||
        fflush(out) == EOF)
        return pd_err_sys(err, PD_EIO, "could not write JSON output");
    return 0;
}

json_t *
pd_json_time(time_t t)
{
    char buf[PD_TIME_BUF];

    return json_string(pd_time_rfc3339(buf, sizeof(buf), t));
}

int
pd_json_parse(json_t **out, const char *buf, size_t len, size_t max, const char *what, pd_err *err)
{
    json_error_t jerr;

    *out = NULL;
    if (len > max)
        return pd_err_set(err, PD_ECORRUPT, "cannot read %s: %zu bytes, more than the %zu allowed",
                          what, len, max);
    *out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (*out == NULL)
        return pd_err_set(err, PD_ECORRUPT,
                          "cannot read %s: malformed JSON at line %d column %d: %s", what,
                          jerr.line, jerr.column, jerr.text);
    return 0;
}
