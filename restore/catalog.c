/* The backup catalog (see catalog.h). */
#include "restore/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/backup.h"
#include "common/json.h"
#include "common/mem.h"

typedef struct collect {
    pd_backup_entry *e;
    size_t n, cap;
    size_t prefix_len;
} collect;

static int
on_entry(void *payload, const pd_storage_entry *se, pd_err *err)
{
    collect *c = payload;
    const char *rest = se->path + c->prefix_len;
    const char *slash = strchr(rest, '/');
    size_t idlen;

    (void)err;
    if (slash == NULL)
        return 0;
    idlen = (size_t)(slash - rest);
    if (idlen == 0 || idlen >= sizeof(c->e[0].id))
        return 0;
    size_t i;
    for (i = 0; i < c->n; i++)
        if (strlen(c->e[i].id) == idlen && strncmp(c->e[i].id, rest, idlen) == 0)
            break;
    if (i == c->n) {
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 16;
            c->e = pd_realloc(c->e, c->cap * sizeof(*c->e));
        }
        memset(&c->e[i], 0, sizeof(c->e[i]));
        memcpy(c->e[i].id, rest, idlen);
        c->n++;
    }
    c->e[i].stored_size += se->size;
    if (strcmp(slash + 1, PD_MANIFEST_NAME) == 0)
        c->e[i].complete = true;
    return 0;
}

static int
by_id(const void *a, const void *b)
{
    return strcmp(((const pd_backup_entry *)a)->id, ((const pd_backup_entry *)b)->id);
}

int
pd_catalog_load_manifest(json_t **manifest, pd_repo *r, const char *id, pd_err *err)
{
    char *name = pd_asprintf("backups/%s/%s", id, PD_MANIFEST_NAME);
    char what[256];
    char *buf = NULL;
    size_t len = 0;
    int rc;

    *manifest = NULL;
    rc = pd_objr_read_all(r, name, PD_MANIFEST_MAX, &buf, &len, err);
    if (rc == 0) {
        snprintf(what, sizeof(what), "manifest of backup %s", id);
        rc = pd_json_parse(manifest, buf, len, PD_MANIFEST_MAX, what, err);
    }
    if (rc == 0 && strcmp(json_string_value(json_object_get(*manifest, "id")) ?: "", id) != 0) {
        json_decref(*manifest);
        *manifest = NULL;
        rc = pd_err_set(err, PD_ECORRUPT, "manifest of backup %s names another backup", id);
    }
    pd_free(buf);
    pd_free(name);
    return rc;
}

int
pd_catalog_list(pd_backup_entry **out, size_t *n, pd_repo *r, pd_err *err)
{
    collect c = {NULL, 0, 0, 0};
    char *prefix = pd_repo_path(r, "backups");
    int rc;

    *out = NULL;
    *n = 0;
    c.prefix_len = strlen(prefix) + 1;
    rc = pd_storage_list(pd_repo_storage(r), prefix, on_entry, &c, err);
    pd_free(prefix);
    if (rc < 0)
        goto fail;
    if (c.n > 0)
        qsort(c.e, c.n, sizeof(*c.e), by_id);
    for (size_t i = 0; i < c.n; i++)
        if (c.e[i].complete &&
            (rc = pd_catalog_load_manifest(&c.e[i].manifest, r, c.e[i].id, err)) < 0)
            goto fail;
    *out = c.e;
    *n = c.n;
    return 0;
fail:
    pd_catalog_free(c.e, c.n);
    return rc;
}

void
pd_catalog_free(pd_backup_entry *entries, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(entries[i].manifest);
    pd_free(entries);
}

int
pd_catalog_find(json_t **manifest, pd_repo *r, const char *spec, pd_err *err)
{
    pd_backup_entry *e = NULL;
    size_t n = 0;
    int rc;

    *manifest = NULL;
    if ((rc = pd_catalog_list(&e, &n, r, err)) < 0)
        return rc;
    rc = PD_ECONFIG;
    if (spec == NULL || strcmp(spec, "latest") == 0) {
        for (size_t i = n; i-- > 0;) {
            if (e[i].complete) {
                *manifest = json_incref(e[i].manifest);
                rc = 0;
                break;
            }
        }
        if (rc < 0) {
            pd_err_set(err, PD_ECONFIG, "cluster \"%s\" has no complete backup",
                       pd_repo_cluster(r));
            pd_err_hint(err, "take one with pgdrill backup");
        }
    } else {
        size_t i;
        for (i = 0; i < n && strcmp(e[i].id, spec) != 0; i++)
            ;
        if (i == n) {
            pd_err_set(err, PD_ECONFIG, "cluster \"%s\" has no backup \"%s\"", pd_repo_cluster(r),
                       spec);
            pd_err_hint(err, "pgdrill list shows the backups");
        } else if (!e[i].complete) {
            pd_err_set(err, PD_ECONFIG,
                       "backup \"%s\" is incomplete (it was never committed) and cannot be used",
                       spec);
            pd_err_hint(err, "choose a complete backup from pgdrill list");
        } else {
            *manifest = json_incref(e[i].manifest);
            rc = 0;
        }
    }
    pd_catalog_free(e, n);
    return rc;
}
