/* The WAL index (see walindex.h). */
#include "restore/walindex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"
#include "restore/target.h"

typedef struct seg {
    unsigned tli;
    uint64_t segno;
} seg;

struct pd_wal_index {
    seg *s;
    size_t n, cap;
};

static int
on_entry(void *payload, const pd_storage_entry *e, pd_err *err)
{
    pd_wal_index *w = payload;
    const char *name = strrchr(e->path, '/');
    unsigned tli, log, sg;

    (void)err;
    name = name ? name + 1 : e->path;
    if (strlen(name) != 24 || strspn(name, "0123456789ABCDEF") != 24 ||
        sscanf(name, "%8X%8X%8X", &tli, &log, &sg) != 3)
        return 0;
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 256;
        w->s = pd_realloc(w->s, w->cap * sizeof(*w->s));
    }
    w->s[w->n].tli = tli;
    w->s[w->n++].segno = (uint64_t)log * (0x100000000ULL / PD_WAL_SEG_SIZE) + sg;
    return 0;
}

static int
by_seg(const void *a, const void *b)
{
    const seg *x = a, *y = b;
    if (x->tli != y->tli)
        return x->tli < y->tli ? -1 : 1;
    return x->segno < y->segno ? -1 : x->segno > y->segno;
}

int
pd_wal_index_load(pd_wal_index **out, pd_repo *r, pd_err *err)
{
    pd_wal_index *w = pd_calloc(1, sizeof(*w));
    char *prefix = pd_repo_path(r, "wal");
    int rc = pd_storage_list(pd_repo_storage(r), prefix, on_entry, w, err);

    pd_free(prefix);
    if (rc < 0) {
        pd_wal_index_free(w);
        *out = NULL;
        return rc;
    }
    if (w->n > 0)
        qsort(w->s, w->n, sizeof(*w->s), by_seg);
    *out = w;
    return 0;
}

void
pd_wal_index_free(pd_wal_index *w)
{
    if (w == NULL)
        return;
    pd_free(w->s);
    pd_free(w);
}

static bool
has(const pd_wal_index *w, unsigned tli, uint64_t segno)
{
    seg key = {tli, segno};
    return bsearch(&key, w->s, w->n, sizeof(*w->s), by_seg) != NULL;
}

void
pd_wal_index_reach(const pd_wal_index *w, unsigned tli, uint64_t stop_lsn, pd_wal_reach *out)
{
    uint64_t stop_seg = stop_lsn / PD_WAL_SEG_SIZE, newest = 0;
    bool any = false;

    memset(out, 0, sizeof(*out));
    out->reach_lsn = stop_lsn;
    for (size_t i = 0; i < w->n; i++) {
        if (w->s[i].tli == tli && w->s[i].segno >= newest) {
            newest = w->s[i].segno;
            any = true;
        }
    }
    if (!any || newest <= stop_seg) {
        // The backup's own WAL is all there is on its timeline; its end
        // segment may be archived too (it is in the backup anyway).
        if (any && newest == stop_seg)
            out->reach_lsn = (stop_seg + 1) * PD_WAL_SEG_SIZE;
        if (any)
            pd_target_segment_name(out->newest, tli, newest * PD_WAL_SEG_SIZE, PD_WAL_SEG_SIZE);
        return;
    }
    pd_target_segment_name(out->newest, tli, newest * PD_WAL_SEG_SIZE, PD_WAL_SEG_SIZE);
    // Continuous from the segment after the backup's last one (the backup
    // carries that one) up to the newest.
    for (uint64_t s = stop_seg + 1; s <= newest; s++) {
        if (!has(w, tli, s)) {
            pd_target_segment_name(out->missing, tli, s * PD_WAL_SEG_SIZE, PD_WAL_SEG_SIZE);
            out->reach_lsn = s * PD_WAL_SEG_SIZE;
            return;
        }
    }
    out->reach_lsn = (newest + 1) * PD_WAL_SEG_SIZE;
}
