/*
 * The custom-format scanner (see dumpscan.h). A byte-driven state machine:
 * each state names the field being read (an integer, a string, fixed bytes,
 * or a run of data bytes), and advance() decides the next one when a field
 * is complete, following pg_dump's WriteHead, WriteToc and the custom
 * format's data blocks (src/bin/pg_dump/pg_backup_archiver.c and
 * pg_backup_custom.c of PostgreSQL 15):
 *
 *   header  "PGDMP" vmaj vmin vrev intSize offSize format   (bytes)
 *           compression (int), 7 ints of creation time, 3 strings
 *   toc     count (int), then per entry: dumpId, hadDumper (ints),
 *           tableoid, oid, tag, desc (strings), section (int), defn,
 *           dropStmt, copyStmt, namespace, tablespace, tableam, owner,
 *           "false" (strings), dependencies (strings up to a NULL one),
 *           data offset (1 + offSize bytes)
 *   data    blocks: type byte 1 (table data) or 3 (large objects), dumpId
 *           (int); table data is chunks (int length, bytes) up to a length
 *           0, the rows as COPY text and then the end marker "\.\n\n\n"
 *           (three newlines that are no rows); large objects are (oid,
 *           chunks up to 0) up to an oid 0
 *
 * An int is a sign byte then intSize bytes, least significant first; a
 * string an int length (-1: NULL) then its bytes.
 */
#include "backup/dumpscan.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

#define BLK_DATA  1
#define BLK_BLOBS 3
/* A string longer than this is not pg_dump's (a function body is far smaller). */
#define STR_MAX (1024 * 1024 * 1024)

enum field {
    F_BYTES,
    F_INT,
    F_STRLEN,
    F_STRBODY,
    F_DATA,
    F_SKIP
};

enum state {
    S_HEAD,
    S_COMPRESSION,
    S_TIME,
    S_HEADSTR,
    S_TOCCOUNT,
    S_E_DUMPID,
    S_E_HADDUMPER,
    S_E_STR1, /* tableoid, oid, tag */
    S_E_DESC,
    S_E_SECTION,
    S_E_STR2, /* defn, dropStmt */
    S_E_COPY,
    S_E_STR3, /* namespace, tablespace, tableam, owner, "false" */
    S_E_DEP,
    S_E_OFFSET,
    S_D_TYPE,
    S_D_ID,
    S_D_LEN,
    S_D_CHUNK,
    S_B_ID,
    S_B_OID,
    S_B_LEN,
    S_B_CHUNK,
    S_DONE,
    S_FAILED,
};

typedef struct table {
    int dump_id;
    char name[PD_DUMPSCAN_NAME_MAX];
    long long rows;
    unsigned long long bytes;
} table;

struct pd_dumpscan {
    enum state state;
    enum field field;
    int count;   /* repetitions left within a state (time ints, strings) */
    size_t need; /* bytes the current field still needs */
    unsigned char tmp[32];
    size_t have;
    int int_size, off_size;
    long long ival;
    /* The string being read: kept (truncated) when wanted. */
    bool keep;
    char str[PD_DUMPSCAN_NAME_MAX + 16];
    size_t str_len;
    bool str_null;
    long long toc_left;
    /* The TOC entry being read. */
    int e_dump_id;
    bool e_table_data;
    char e_name[PD_DUMPSCAN_NAME_MAX];
    table *tables;
    size_t n, cap;
    table *current;        /* the table whose data is streaming, or NULL */
    unsigned char tail[5]; /* the last bytes of its data, for the end marker */
    size_t tail_len;
    char why[160];
};

static void
fail(pd_dumpscan *s, const char *why)
{
    if (s->state != S_FAILED)
        snprintf(s->why, sizeof(s->why), "%s", why);
    s->state = S_FAILED;
}

static void
want(pd_dumpscan *s, enum state st, enum field f, size_t n)
{
    s->state = st;
    s->field = f;
    s->need = n;
    s->have = 0;
}

static void
want_int(pd_dumpscan *s, enum state st)
{
    want(s, st, F_INT, 1 + (size_t)s->int_size);
}

static void
want_str(pd_dumpscan *s, enum state st, bool keep)
{
    want(s, st, F_STRLEN, 1 + (size_t)s->int_size);
    s->keep = keep;
    s->str_len = 0;
    s->str[0] = '\0';
}

/* The table name of "COPY <name> (cols) FROM stdin;": as pg_dump quoted it. */
static bool
copy_name(const char *stmt, char *out, size_t size)
{
    const char *p;
    size_t k = 0;
    bool quoted = false;

    if (strncmp(stmt, "COPY ", 5) != 0)
        return false;
    for (p = stmt + 5; *p && (quoted || (*p != ' ' && *p != '(')); p++) {
        if (*p == '"')
            quoted = !quoted;
        if (k + 1 >= size)
            return false;
        out[k++] = *p;
    }
    out[k] = '\0';
    return k > 0 && !quoted && *p != '\0';
}

static table *
find_table(pd_dumpscan *s, int id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->tables[i].dump_id == id)
            return &s->tables[i];
    return NULL;
}

static void
end_entry(pd_dumpscan *s)
{
    if (s->e_table_data) {
        if (s->n >= PD_DUMPSCAN_MAX_TABLES) {
            fail(s, "more tables than the scanner keeps");
            return;
        }
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 64;
            s->tables = pd_realloc(s->tables, s->cap * sizeof(*s->tables));
        }
        table *t = &s->tables[s->n++];
        memset(t, 0, sizeof(*t));
        t->dump_id = s->e_dump_id;
        memcpy(t->name, s->e_name, sizeof(t->name));
    }
    if (--s->toc_left > 0)
        want_int(s, S_E_DUMPID);
    else
        want(s, S_D_TYPE, F_BYTES, 1);
}

/* A field is complete: the next one. */
static void
advance(pd_dumpscan *s)
{
    switch (s->state) {
    case S_HEAD:
        if (memcmp(s->tmp, "PGDMP", 5) != 0)
            return fail(s, "not a pg_dump archive");
        if (s->tmp[5] != 1 || s->tmp[6] != 14)
            return fail(s, "an archive version other than 1.14 (pg_dump 15)");
        if (s->tmp[8] < 1 || s->tmp[8] > 8 || s->tmp[9] < 1 || s->tmp[9] > 16 || s->tmp[10] != 1)
            return fail(s, "not a custom-format archive");
        s->int_size = s->tmp[8];
        s->off_size = s->tmp[9];
        return want_int(s, S_COMPRESSION);
    case S_COMPRESSION:
        if (s->ival != 0)
            return fail(s, "a compressed archive");
        s->count = 7;
        return want_int(s, S_TIME);
    case S_TIME:
        if (--s->count > 0)
            return want_int(s, S_TIME);
        s->count = 3;
        return want_str(s, S_HEADSTR, false);
    case S_HEADSTR:
        if (--s->count > 0)
            return want_str(s, S_HEADSTR, false);
        return want_int(s, S_TOCCOUNT);
    case S_TOCCOUNT:
        if (s->ival < 0 || s->ival > 100000000)
            return fail(s, "a table of contents of impossible size");
        s->toc_left = s->ival;
        if (s->toc_left == 0)
            return want(s, S_D_TYPE, F_BYTES, 1);
        return want_int(s, S_E_DUMPID);
    case S_E_DUMPID:
        if (s->ival <= 0 || s->ival > INT32_MAX)
            return fail(s, "a table of contents entry with a bad id");
        s->e_dump_id = (int)s->ival;
        s->e_table_data = false;
        s->e_name[0] = '\0';
        return want_int(s, S_E_HADDUMPER);
    case S_E_HADDUMPER:
        s->count = 3;
        return want_str(s, S_E_STR1, false);
    case S_E_STR1:
        if (--s->count > 0)
            return want_str(s, S_E_STR1, false);
        return want_str(s, S_E_DESC, true);
    case S_E_DESC:
        s->e_table_data = !s->str_null && strcmp(s->str, "TABLE DATA") == 0;
        return want_int(s, S_E_SECTION);
    case S_E_SECTION:
        s->count = 2;
        return want_str(s, S_E_STR2, false);
    case S_E_STR2:
        if (--s->count > 0)
            return want_str(s, S_E_STR2, false);
        return want_str(s, S_E_COPY, true);
    case S_E_COPY:
        if (s->e_table_data && (s->str_null || !copy_name(s->str, s->e_name, sizeof(s->e_name))))
            return fail(s, "a table's data entry without a COPY statement it understands");
        s->count = 5;
        return want_str(s, S_E_STR3, false);
    case S_E_STR3:
        if (--s->count > 0)
            return want_str(s, S_E_STR3, false);
        return want_str(s, S_E_DEP, false);
    case S_E_DEP:
        if (!s->str_null)
            return want_str(s, S_E_DEP, false);
        return want(s, S_E_OFFSET, F_BYTES, 1 + (size_t)s->off_size);
    case S_E_OFFSET:
        return end_entry(s);
    case S_D_TYPE:
        if (s->tmp[0] == BLK_DATA)
            return want_int(s, S_D_ID);
        if (s->tmp[0] == BLK_BLOBS)
            return want_int(s, S_B_ID);
        // The end of the data (pg_dump writes no more blocks after the last).
        s->state = S_DONE;
        return;
    case S_D_ID:
        s->current = s->ival > 0 && s->ival <= INT32_MAX ? find_table(s, (int)s->ival) : NULL;
        if (s->current == NULL)
            return fail(s, "a data block of a table not in the table of contents");
        s->tail_len = 0;
        return want_int(s, S_D_LEN);
    case S_D_LEN:
        if (s->ival < 0 || s->ival > STR_MAX)
            return fail(s, "a data chunk of impossible length");
        if (s->ival == 0) {
            // The end marker's newlines are no rows; without it, this is not what we know.
            if (s->tail_len < 5 || memcmp(s->tail, "\\.\n\n\n", 5) != 0 || s->current->rows < 3)
                return fail(s, "a table's data without the end-of-copy marker");
            s->current->rows -= 3;
            return want(s, S_D_TYPE, F_BYTES, 1);
        }
        s->current->bytes += (unsigned long long)s->ival;
        return want(s, S_D_CHUNK, F_DATA, (size_t)s->ival);
    case S_D_CHUNK:
        return want_int(s, S_D_LEN);
    case S_B_ID:
        return want_int(s, S_B_OID);
    case S_B_OID:
        if (s->ival == 0)
            return want(s, S_D_TYPE, F_BYTES, 1);
        return want_int(s, S_B_LEN);
    case S_B_LEN:
        if (s->ival < 0 || s->ival > STR_MAX)
            return fail(s, "a large object chunk of impossible length");
        if (s->ival == 0)
            return want_int(s, S_B_OID);
        return want(s, S_B_CHUNK, F_SKIP, (size_t)s->ival);
    case S_B_CHUNK:
        return want_int(s, S_B_LEN);
    case S_DONE:
    case S_FAILED:
        return;
    }
}

/* An int from tmp: a sign byte, then int_size bytes, least significant first. */
static long long
tmp_int(const pd_dumpscan *s)
{
    unsigned long long v = 0;

    for (int b = 0; b < s->int_size; b++)
        v |= (unsigned long long)s->tmp[1 + b] << (8 * b);
    if (v > (unsigned long long)INT64_MAX)
        return INT64_MIN; // impossible: every check refuses it
    return s->tmp[0] ? -(long long)v : (long long)v;
}

void
pd_dumpscan_feed(pd_dumpscan *s, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    while (len > 0 && s->state != S_DONE && s->state != S_FAILED) {
        size_t take = s->need < len ? s->need : len;
        switch (s->field) {
        case F_BYTES:
        case F_INT:
        case F_STRLEN:
            memcpy(s->tmp + s->have, p, take);
            s->have += take;
            break;
        case F_STRBODY:
            if (s->keep && s->str_len < sizeof(s->str) - 1) {
                size_t room = sizeof(s->str) - 1 - s->str_len;
                size_t n = take < room ? take : room;
                memcpy(s->str + s->str_len, p, n);
                s->str_len += n;
                s->str[s->str_len] = '\0';
            }
            break;
        case F_DATA:
            for (const unsigned char *q = p, *end = p + take;
                 (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
                s->current->rows++;
            if (take >= sizeof(s->tail)) {
                memcpy(s->tail, p + take - sizeof(s->tail), sizeof(s->tail));
                s->tail_len = sizeof(s->tail);
            } else {
                size_t keep =
                    s->tail_len + take > sizeof(s->tail) ? sizeof(s->tail) - take : s->tail_len;
                memmove(s->tail, s->tail + s->tail_len - keep, keep);
                memcpy(s->tail + keep, p, take);
                s->tail_len = keep + take;
            }
            break;
        case F_SKIP:
            break;
        }
        p += take;
        len -= take;
        s->need -= take;
        if (s->need > 0)
            continue;
        if (s->field == F_INT) {
            s->ival = tmp_int(s);
        } else if (s->field == F_STRLEN) {
            long long n = tmp_int(s);
            s->str_null = n < 0;
            if (n < -1 || n > STR_MAX) {
                fail(s, "a string of impossible length");
                break;
            }
            if (n > 0) {
                s->field = F_STRBODY;
                s->need = (size_t)n;
                continue;
            }
        }
        advance(s);
    }
}

bool
pd_dumpscan_ok(const pd_dumpscan *s, char *why, size_t whysize)
{
    if (s->state == S_DONE || (s->state == S_D_TYPE && s->have == 0))
        return true;
    snprintf(why, whysize, "%s", s->state == S_FAILED ? s->why : "the archive ended early");
    return false;
}

static int
by_bytes(const void *a, const void *b)
{
    const table *x = a, *y = b;

    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : x->dump_id - y->dump_id;
}

json_t *
pd_dumpscan_counts(const pd_dumpscan *s, const char *database, size_t max)
{
    json_t *out = json_array();
    table *sorted = pd_malloc((s->n ? s->n : 1) * sizeof(*sorted));

    if (s->n)
        memcpy(sorted, s->tables, s->n * sizeof(*sorted));
    qsort(sorted, s->n, sizeof(*sorted), by_bytes);
    for (size_t i = 0; i < s->n && i < max; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "database", json_string(database));
        json_object_set_new(o, "table", json_string(sorted[i].name));
        json_object_set_new(o, "rows", json_integer(sorted[i].rows));
        json_object_set_new(o, "changes", json_integer(0));
        json_array_append_new(out, o);
    }
    pd_free(sorted);
    return out;
}

pd_dumpscan *
pd_dumpscan_new(void)
{
    pd_dumpscan *s = pd_calloc(1, sizeof(*s));

    want(s, S_HEAD, F_BYTES, 11);
    return s;
}

void
pd_dumpscan_free(pd_dumpscan *s)
{
    if (s == NULL)
        return;
    pd_free(s->tables);
    pd_free(s);
}
