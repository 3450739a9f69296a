/* Drill reports in the repository (see report.h). */
#include "drills/report.h"

#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/mem.h"

int
pd_drill_report_store(pd_repo *r, json_t *report, pd_err *err)
{
    const char *id = json_string_value(json_object_get(report, "id"));
    char *text = json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    char *name = pd_asprintf("drills/%s.json", id);
    const pd_secret *key = NULL;
    unsigned char key_id[PD_KEY_ID_SIZE];
    int rc = pd_repo_new_data_key(r, &key, key_id, err);

    if (rc == 0)
        rc = pd_objw_put(r, name, key, key ? key_id : NULL, true, text, strlen(text), err);
    pd_free(name);
    free(text);
    return rc;
}

typedef struct collect {
    json_t *names;
    size_t prefix_len;
} collect;

static int
on_report(void *payload, const pd_storage_entry *e, pd_err *err)
{
    collect *c = payload;
    const char *name = e->path + c->prefix_len;
    size_t len = strlen(name);

    (void)err;
    if (strchr(name, '/') == NULL && len > 5 && strcmp(name + len - 5, ".json") == 0)
        json_array_append_new(c->names, json_string(name));
    return 0;
}

static int
by_name(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

int
pd_drill_reports_load(json_t **out, pd_repo *r, pd_err *err)
{
    collect c = {json_array(), 0};
    char *prefix = pd_repo_path(r, "drills");
    json_t *reports = json_array();
    json_t **sorted = NULL;
    size_t n;
    int rc;

    *out = NULL;
    c.prefix_len = strlen(prefix) + 1;
    rc = pd_storage_list(pd_repo_storage(r), prefix, on_report, &c, err);
    pd_free(prefix);
    if (rc < 0)
        goto cleanup;
    n = json_array_size(c.names);
    sorted = pd_calloc(n + 1, sizeof(*sorted));
    for (size_t i = 0; i < n; i++)
        sorted[i] = json_array_get(c.names, i);
    qsort(sorted, n, sizeof(*sorted), by_name);
    for (size_t i = 0; i < n; i++) {
        char *name = pd_asprintf("drills/%s", json_string_value(sorted[i]));
        char *buf = NULL;
        size_t len = 0;
        json_t *doc = NULL;
        rc = pd_objr_read_all(r, name, PD_DRILL_REPORT_MAX, &buf, &len, err);
        if (rc == 0)
            rc = pd_json_parse(&doc, buf, len, PD_DRILL_REPORT_MAX, name, err);
        pd_free(buf);
        pd_free(name);
        if (rc < 0)
            goto cleanup;
        json_array_append_new(reports, doc);
    }
    *out = reports;
    reports = NULL;
cleanup:
    pd_free(sorted);
    json_decref(c.names);
    json_decref(reports);
    return rc;
}

json_t *
pd_drill_report_last_of(json_t *reports, const char *backup_id)
{
    for (size_t i = json_array_size(reports); i-- > 0;) {
        json_t *d = json_array_get(reports, i);
        if (strcmp(json_string_value(json_object_get(d, "backup_id")) ?: "", backup_id) == 0)
            return d;
    }
    return NULL;
}

json_t *
pd_drill_report_brief(json_t *report)
{
    if (report == NULL)
        return json_null();
    json_t *b = json_object();
    json_object_set(b, "id", json_object_get(report, "id"));
    json_object_set(b, "result", json_object_get(report, "result"));
    json_object_set(b, "rto_seconds", json_object_get(report, "rto_seconds"));
    return b;
}
