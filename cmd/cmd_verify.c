/* pgdrill verify: read every object back and check hashes, tags and files. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/log.h"
#include "common/time.h"
#include "restore/catalog.h"
#include "restore/target.h"
#include "restore/verify.h"
#include "restore/walindex.h"

int
pd_cmd_verify(const pd_cmd_args *args)
{
    const char *spec = pd_cmd_opt(args, "backup");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    pd_repo *r = NULL;
    pd_backup_entry *e = NULL;
    pd_wal_index *w = NULL;
    json_t *report = json_array();
    size_t n = 0;
    int rc, worst = PD_EXIT_OK, read_lock = -1;

    if ((rc = pd_cmd_load_config(&cfg, args)) != 0) {
        json_decref(report);
        return rc;
    }
    read_lock = pd_cmd_read_lock(cfg);
    if (pd_repo_open(&r, cfg, &err) < 0 || pd_catalog_list(&e, &n, r, &err) < 0 ||
        pd_wal_index_load(&w, r, &err) < 0) {
        worst = pd_cmd_fail(&err);
        goto cleanup;
    }
    bool all = spec && strcmp(spec, "all") == 0;
    json_t *one = NULL;
    if (!all) {
        if (pd_catalog_find(&one, r, spec, &err) < 0) {
            worst = pd_cmd_fail(&err);
            goto cleanup;
        }
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = e[i].manifest;
        pd_verify_result res;
        char size[PD_FMT_BUF], dur[PD_FMT_BUF];
        if (!e[i].complete ||
            (!all && strcmp(e[i].id, json_string_value(json_object_get(one, "id"))) != 0))
            continue;
        double t0 = pd_time_mono();
        rc = pd_verify_backup(&res, r, m, &err);
        // The archive must be continuous from the backup on (point-in-time recovery);
        // a logical backup has no LSN and needs no WAL. The parse must not
        // overwrite the verification's own error.
        uint64_t stop = 0;
        pd_wal_reach reach;
        pd_err lsn_err = PD_ERR_INIT;
        memset(&reach, 0, sizeof(reach));
        if (strcmp(json_string_value(json_object_get(m, "type")) ?: "", "physical") == 0 &&
            pd_target_parse_lsn(&stop, json_string_value(json_object_get(m, "stop_lsn")) ?: "",
                                &lsn_err) == 0)
            pd_wal_index_reach(w, (unsigned)json_integer_value(json_object_get(m, "timeline")),
                               stop, &reach);
        if (reach.missing[0]) {
            char lsn[32];
            snprintf(lsn, sizeof(lsn), "%X/%X", (unsigned)(reach.reach_lsn >> 32),
                     (unsigned)reach.reach_lsn);
            pd_log_error("backup %s: WAL file %s is missing from the archive (a gap before %s); "
                         "the backup can be recovered only up to LSN %s",
                         e[i].id, reach.missing, reach.newest, lsn);
            res.problems++;
            if (rc == 0)
                rc = pd_err_set(&err, PD_ECORRUPT,
                                "backup %s failed verification: the WAL "
                                "archive has a gap at %s",
                                e[i].id, reach.missing);
        }
        json_t *j = json_object();
        json_object_set_new(j, "id", json_string(e[i].id));
        json_object_set_new(j, "result", json_string(rc == 0 ? "ok" : "failed"));
        json_object_set_new(j, "objects", json_integer(res.objects));
        json_object_set_new(j, "files", json_integer(res.files));
        json_object_set_new(j, "problems", json_integer(res.problems));
        json_object_set_new(j, "bytes", json_integer((json_int_t)res.bytes));
        json_array_append_new(report, j);
        if (rc < 0) {
            int code = pd_cmd_fail(&err);
            if (code > worst)
                worst = code;
        } else {
            double secs = pd_time_mono() - t0;
            pd_log_info("backup %s verified: %u objects, %u files, %s in %s", e[i].id, res.objects,
                        res.files, pd_fmt_size(size, sizeof(size), res.bytes),
                        pd_fmt_duration(dur, sizeof(dur), secs));
        }
    }
    json_decref(one);
    if (pd_cmd_flag(args, "json") && pd_json_print(stdout, report, &err) < 0)
        worst = pd_cmd_fail(&err);
cleanup:
    json_decref(report);
    pd_wal_index_free(w);
    pd_catalog_free(e, n);
    pd_repo_free(r);
    if (read_lock >= 0)
        close(read_lock);
    pd_config_free(cfg);
    return worst;
}
