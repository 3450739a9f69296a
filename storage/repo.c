/*
 * Repository metadata and the keyring (see repo.h).
 *
 * repo.json carries a MAC (HMAC-SHA256 under the master key over the
 * canonical JSON without "mac"), so nobody can switch a repository to
 * "encryption none" or swap its key check without the key.
 *
 * Key rotation, crash-safe in three phases; each file write is atomic
 * (temp file, fsync, rename, fsync dir), so a kill leaves every file either
 * before or after its rewrite:
 *  1. Every keys/<id>.json gains a wrapping under the new master key beside
 *     the old one. Until phase 2 is done repo.json names the old key, and
 *     every key file still has an old wrapping: the old key reads everything.
 *  2. repo.json is rewritten to name the new key (the switch, one rename).
 *     From here every key file has a new wrapping: the new key reads all.
 *  3. Old wrappings are dropped from each key file. A kill here leaves extra
 *     old wrappings, harmless; running rotate again with the same new key
 *     sees repo.json already names it and finishes phase 3.
 */
#include "storage/repo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "storage/sigv4.h"

#define KEY_CACHE   16
#define PINNED_KEYS 8 /* keys made by pd_repo_new_data_key: valid until pd_repo_free */

/*
 * What names a repository for its host-local lock: repo and, for S3, the
 * endpoint without its scheme or a final slash, so that "http://h:9000" and
 * "h:9000/" share one lock.
 */
static char *
lock_identity(const pd_config *cfg)
{
    const char *endpoint = pd_config_get(cfg, "s3-endpoint");
    const char *host = endpoint ? endpoint : "";
    const char *scheme = strstr(host, "://");

    if (scheme)
        host = scheme + 3;
    size_t n = strlen(host);
    while (n > 0 && host[n - 1] == '/')
        n--;
    return pd_asprintf("%s %.*s", pd_config_get(cfg, "repo"), (int)n, host);
}

struct pd_repo {
    pd_storage *st;
    char *repo;    /* the repo setting, for messages */
    char *lock_id; /* lock_identity() */
    char *cluster;
    pd_cipher cipher;
    pd_compression compression;
    int level;
    int workers;
    pd_secret *master;
    unsigned char master_id[PD_KEY_ID_SIZE];
    json_t *doc; /* repo.json as read */
    struct {
        unsigned char id[PD_KEY_ID_SIZE];
        pd_secret *key;
    } cache[KEY_CACHE], pinned[PINNED_KEYS];
    size_t cache_next, n_pinned;
};

static const char *const cipher_names[] = {"none", "aes-256-gcm"};
static const char *const compression_names[] = {"none", "zstd"};

static int
hex_decode(unsigned char *out, size_t outlen, const char *hex)
{
    if (hex == NULL || strlen(hex) != 2 * outlen)
        return -1;
    for (size_t i = 0; i < outlen; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char c = hex[2 * i + j];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0)
                return -1;
            v = v * 16 + d;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static json_t *
json_hex(const unsigned char *data, size_t len)
{
    char buf[256];

    PD_ASSERT(2 * len + 1 <= sizeof(buf));
    pd_hex(buf, data, len);
    return json_string(buf);
}

static char *
repo_path(const char *cluster, const char *rest)
{
    return pd_asprintf("%s/%s", cluster, rest);
}

/* Writes a small metadata file atomically. */
static int
put_file(pd_storage *st, const char *path, const char *data, bool no_overwrite, pd_err *err)
{
    pd_writer_opts wo = PD_WRITER_OPTS_INIT;
    pd_writer *w = NULL;
    int rc;

    wo.no_overwrite = no_overwrite;
    if ((rc = pd_storage_open_write(&w, st, path, &wo, err)) < 0)
        goto cleanup;
    if ((rc = pd_writer_write(w, data, strlen(data), err)) < 0)
        goto cleanup;
    rc = pd_writer_commit(w, err);
cleanup:
    pd_writer_free(w);
    return rc;
}

static int
get_json(json_t **out, pd_storage *st, const char *path, size_t max, pd_err *err)
{
    char what[512];
    char *buf = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if ((rc = pd_storage_read_all(st, path, max, &buf, &len, err)) < 0)
        return rc;
    snprintf(what, sizeof(what), "repository file \"%s\"", path);
    rc = pd_json_parse(out, buf, len, max, what, err);
    pd_free(buf);
    return rc;
}

/* The MAC of repo.json: HMAC-SHA256 over the sorted compact JSON without "mac". */
static void
repo_mac(unsigned char mac[32], const pd_secret *master, json_t *doc)
{
    json_t *copy = json_deep_copy(doc);
    unsigned int n = 32;
    char *canon;

    json_object_del(copy, "mac");
    canon = json_dumps(copy, JSON_SORT_KEYS | JSON_COMPACT);
    PD_ASSERT(canon != NULL);
    PD_ASSERT(HMAC(EVP_sha256(), pd_secret_data(master), (int)pd_secret_len(master),
                   (const unsigned char *)canon, strlen(canon), mac, &n) != NULL);
    pd_free(canon);
    json_decref(copy);
}

/*
 * The master key from the configuration: key-file, or a passphrase
 * (passphrase-file or PGDRILL_PASSPHRASE) stretched with the repository's
 * scrypt parameters. kdf is repo.json's "kdf" (NULL at init with a key file).
 */
static int
load_master(pd_secret **out, const pd_config *cfg, const pd_scrypt_params *kdf, pd_err *err)
{
    const char *key_file = pd_config_get(cfg, "key-file");
    const char *pass_file = pd_config_get(cfg, "passphrase-file");
    const char *pass_env = getenv("PGDRILL_PASSPHRASE");
    pd_secret *pass = NULL;
    int rc;

    *out = NULL;
    if (key_file && (pass_file || pass_env))
        return pd_err_set(err, PD_ECONFIG,
                          "both key-file and a passphrase are set for cluster \"%s\"; keep one",
                          pd_config_cluster(cfg));
    if (key_file)
        return pd_key_file_read(out, key_file, err);
    if (pass_file) {
        if ((rc = pd_secret_read_file(&pass, pass_file, 1024, 1, 1, err)) < 0)
            return rc;
    } else if (pass_env) {
        pass = pd_secret_new(pass_env, strlen(pass_env));
        // Children (pg_basebackup, postgres) must not inherit it.
        unsetenv("PGDRILL_PASSPHRASE");
    } else {
        pd_err_set(err, PD_ECONFIG, "no key for the encrypted repository of cluster \"%s\"",
                   pd_config_cluster(cfg));
        return pd_err_hint(err, "set key-file (or passphrase-file, or PGDRILL_PASSPHRASE)");
    }
    if (pd_secret_len(pass) < 8) {
        pd_secret_free(pass);
        return pd_err_set(err, PD_ECONFIG, "the passphrase is shorter than 8 characters");
    }
    if (kdf == NULL) {
        pd_secret_free(pass);
        pd_err_set(err, PD_ECONFIG,
                   "the repository of cluster \"%s\" was created with a key file, not a passphrase",
                   pd_config_cluster(cfg));
        return pd_err_hint(err, "set key-file");
    }
    rc = pd_key_from_passphrase(out, pass, kdf, err);
    pd_secret_free(pass);
    return rc;
}

static json_t *
kdf_json(const pd_scrypt_params *p)
{
    json_t *j = json_object();

    json_object_set_new(j, "name", json_string("scrypt"));
    json_object_set_new(j, "n", json_integer((json_int_t)p->n));
    json_object_set_new(j, "r", json_integer(p->r));
    json_object_set_new(j, "p", json_integer(p->p));
    json_object_set_new(j, "salt", json_hex(p->salt, sizeof(p->salt)));
    return j;
}

static int
kdf_parse(pd_scrypt_params *p, json_t *j)
{
    json_int_t n = json_integer_value(json_object_get(j, "n"));
    json_int_t r = json_integer_value(json_object_get(j, "r"));
    json_int_t pp = json_integer_value(json_object_get(j, "p"));

    if (strcmp(json_string_value(json_object_get(j, "name")) ?: "", "scrypt") != 0)
        return -1;
    // Bounds keep a tampered repo.json from asking for unbounded memory or time.
    if (n < 1024 || n > (1 << 22) || (n & (n - 1)) != 0 || r < 1 || r > 32 || pp < 1 || pp > 16)
        return -1;
    p->n = (uint64_t)n;
    p->r = (uint32_t)r;
    p->p = (uint32_t)pp;
    return hex_decode(p->salt, sizeof(p->salt), json_string_value(json_object_get(j, "salt")));
}

/*
 * Creates a missing local repository directory, mode 0700. Only the last
 * component: a missing parent (an unmounted mount point) must not be made
 * on the root file system.
 */
static int
make_repo_dir(const char *root, pd_err *err)
{
    char *parent = pd_strdup(root);
    char *slash = strrchr(parent, '/');
    int rc = 0;

    if (slash != NULL)
        *(slash == parent ? slash + 1 : slash) = '\0';
    if (mkdir(root, 0700) < 0 && errno != EEXIST) {
        rc = pd_err_sys(err, errno == ENOENT ? PD_ECONFIG : PD_EIO,
                        "could not create repository directory \"%s\"", root);
        if (errno == ENOENT)
            pd_err_hint(err, "its parent \"%s\" does not exist: create it (or mount it) first",
                        parent);
    } else {
        // The new directory's name must survive a crash too.
        int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
            rc = pd_err_sys(err, PD_EIO, "could not fsync directory \"%s\"", parent);
        if (fd >= 0)
            close(fd);
    }
    pd_free(parent);
    return rc;
}

/*
 * Opens the repository's storage. A missing repository is a configuration
 * error (exit 2), except for init (create), which makes a local one.
 */
static int
open_storage(pd_storage **st, const pd_config *cfg, bool create, pd_err *err)
{
    const char *repo = pd_config_get(cfg, "repo");
    int rc = pd_storage_open_config(st, cfg, err);

    if (rc == PD_ENOTFOUND && create && repo[0] == '/') {
        pd_err_clear(err);
        if ((rc = make_repo_dir(repo, err)) < 0)
            return rc;
        rc = pd_storage_open(st, repo, err);
    }
    if (rc == PD_ENOTFOUND)
        rc = err->code = PD_ECONFIG;
    return rc;
}

static void
set_key_fields(json_t *doc, const pd_secret *master)
{
    unsigned char kcv[PD_KEY_CHECK_SIZE], id[PD_KEY_ID_SIZE], mac[32];

    pd_key_check_value(kcv, master);
    pd_key_id(id, master);
    json_object_set_new(doc, "key_id", json_hex(id, sizeof(id)));
    json_object_set_new(doc, "key_check", json_hex(kcv, sizeof(kcv)));
    repo_mac(mac, master, doc);
    json_object_set_new(doc, "mac", json_hex(mac, sizeof(mac)));
}

int
pd_repo_init(char **summary, const pd_config *cfg, const pd_repo_init_opts *opts, pd_err *err)
{
    const char *cluster = pd_config_cluster(cfg);
    const char *enc = pd_config_get(cfg, "encryption");
    const char *comp = pd_config_get(cfg, "compression");
    const char *key_file =
        opts->generate_key_file ? opts->generate_key_file : pd_config_get(cfg, "key-file");
    pd_scrypt_params sp = {PD_SCRYPT_N, PD_SCRYPT_R, PD_SCRYPT_P, {0}};
    pd_storage *st = NULL;
    pd_secret *master = NULL;
    pd_storage_entry entry;
    json_t *doc = NULL;
    char *path = repo_path(cluster, "repo.json");
    char *text = NULL;
    bool encrypted = strcmp(enc, "none") != 0;
    bool generated = false;
    int rc;

    *summary = NULL;
    if (!encrypted && opts->generate_key_file) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "--generate-key-file makes no sense with encryption = none");
        pd_err_hint(err, "drop the option, or remove encryption = none");
        goto cleanup;
    }
    if ((rc = open_storage(&st, cfg, true, err)) < 0)
        goto cleanup;
    rc = pd_storage_stat(st, path, &entry, err);
    if (rc == 0) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "repository \"%s\" is already initialised for cluster \"%s\"",
                        pd_config_get(cfg, "repo"), cluster);
        pd_err_hint(err, "pgdrill init never overwrites a repository; use another repo or cluster");
        goto cleanup;
    }
    if (rc != PD_ENOTFOUND)
        goto cleanup;
    pd_err_clear(err);

    doc = json_object();
    json_object_set_new(doc, "format", json_integer(PD_REPO_FORMAT));
    json_object_set_new(doc, "cluster", json_string(cluster));
    json_object_set_new(doc, "created", pd_json_time(time(NULL)));
    json_object_set_new(doc, "cipher", json_string(encrypted ? "aes-256-gcm" : "none"));
    json_object_set_new(doc, "compression", json_string(comp));
    json_object_set_new(doc, "compression_level",
                        json_integer(pd_config_get_int(cfg, "compression-level")));
    json_object_set_new(doc, "system_identifier", json_null());
    json_object_set_new(doc, "pg_version", json_null());

    if (encrypted) {
        if (opts->generate_key_file) {
            if ((rc = pd_key_file_create(opts->generate_key_file, err)) < 0) {
                if (rc == PD_EEXIST)
                    rc = err->code = PD_ECONFIG; // the user named an existing file
                goto cleanup;
            }
            generated = true;
            if ((rc = pd_key_file_read(&master, opts->generate_key_file, err)) < 0)
                goto cleanup;
        } else if (key_file) {
            if ((rc = load_master(&master, cfg, NULL, err)) < 0)
                goto cleanup;
        } else {
            if (opts->scrypt)
                sp = *opts->scrypt;
            if (RAND_bytes(sp.salt, sizeof(sp.salt)) != 1) {
                rc = pd_err_set(err, PD_EFAIL, "could not get random bytes from OpenSSL");
                goto cleanup;
            }
            if ((rc = load_master(&master, cfg, &sp, err)) < 0)
                goto cleanup;
            json_object_set_new(doc, "kdf", kdf_json(&sp));
        }
        json_object_set_new(doc, "key_source",
                            json_string(json_object_get(doc, "kdf") ? "passphrase" : "key-file"));
        set_key_fields(doc, master);
    }
    text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    // no_overwrite: of two racing inits, exactly one wins.
    if ((rc = put_file(st, path, text, true, err)) < 0) {
        if (rc == PD_EEXIST)
            rc = pd_err_set(err, PD_ECONFIG,
                            "repository \"%s\" is already initialised for cluster \"%s\"",
                            pd_config_get(cfg, "repo"), cluster);
        goto cleanup;
    }
    *summary = pd_asprintf(
        "initialised repository %s for cluster %s: encryption %s%s%s%s, compression %s (level "
        "%ld)",
        pd_config_get(cfg, "repo"), cluster, encrypted ? "aes-256-gcm" : "none",
        encrypted ? (json_object_get(doc, "kdf") ? " (passphrase, scrypt)" : " (key file ") : "",
        encrypted && !json_object_get(doc, "kdf") ? key_file : "",
        encrypted && !json_object_get(doc, "kdf") ? ")" : "", comp,
        pd_config_get_int(cfg, "compression-level"));
cleanup:
    // A key file made for a repository that was not created would mislead.
    if (rc < 0 && generated)
        unlink(opts->generate_key_file);
    pd_free(text);
    json_decref(doc);
    pd_secret_free(master);
    pd_storage_free(st);
    pd_free(path);
    return rc;
}

/* Verifies master against repo.json's check value and MAC. */
static int
verify_master(json_t *doc, const pd_secret *master, const pd_config *cfg, pd_err *err)
{
    unsigned char kcv[PD_KEY_CHECK_SIZE], want[PD_KEY_CHECK_SIZE], mac[32], want_mac[32];

    pd_key_check_value(kcv, master);
    if (hex_decode(want, sizeof(want), json_string_value(json_object_get(doc, "key_check"))) < 0)
        return pd_err_set(err, PD_ECORRUPT,
                          "repository file \"%s/repo.json\" has no valid key_check",
                          pd_config_cluster(cfg));
    if (CRYPTO_memcmp(kcv, want, sizeof(kcv)) != 0) {
        pd_err_set(err, PD_ECONFIG, "wrong key for repository \"%s\" cluster \"%s\"",
                   pd_config_get(cfg, "repo"), pd_config_cluster(cfg));
        return pd_err_hint(err, "the key does not match the repository's key check value; check %s",
                           json_object_get(doc, "kdf") ? "the passphrase" : "key-file");
    }
    repo_mac(mac, master, doc);
    if (hex_decode(want_mac, sizeof(want_mac), json_string_value(json_object_get(doc, "mac"))) <
            0 ||
        CRYPTO_memcmp(mac, want_mac, sizeof(mac)) != 0)
        return pd_err_set(err, PD_ECORRUPT,
                          "repository file \"%s/repo.json\" was altered: its MAC does not verify",
                          pd_config_cluster(cfg));
    return 0;
}

/* Reads repo.json and checks what can be checked without a key. */
static int
stop_at_first(void *payload, const pd_storage_entry *e, pd_err *err)
{
    (void)e;
    (void)err;
    *(bool *)payload = true;
    return PD_EFAIL;
}

static int
read_repo_json(json_t **doc, pd_storage *st, const pd_config *cfg, pd_err *err)
{
    char *path = repo_path(pd_config_cluster(cfg), "repo.json");
    int rc = get_json(doc, st, path, PD_REPO_JSON_MAX, err);
    bool any = false;

    // A missing repo.json may be a missing bucket (an S3 HEAD says only 404):
    // a listing names that cause.
    if (rc == PD_ENOTFOUND &&
        pd_storage_list(st, pd_config_cluster(cfg), stop_at_first, &any, err) < 0 && !any) {
        rc = err->code;
    } else if (rc == PD_ENOTFOUND) {
        pd_err_clear(err);
        rc = pd_err_set(err, PD_ECONFIG, "repository \"%s\" has no cluster \"%s\"",
                        pd_config_get(cfg, "repo"), pd_config_cluster(cfg));
        pd_err_hint(err, "run pgdrill init, or check repo and --cluster");
    } else if (rc == 0 && json_integer_value(json_object_get(*doc, "format")) != PD_REPO_FORMAT) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "repository \"%s\" cluster \"%s\" has format %lld; this pgdrill reads "
                        "format %d",
                        pd_config_get(cfg, "repo"), pd_config_cluster(cfg),
                        (long long)json_integer_value(json_object_get(*doc, "format")),
                        PD_REPO_FORMAT);
    }
    pd_free(path);
    return rc;
}

static int
name_index(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

int
pd_repo_open(pd_repo **out, const pd_config *cfg, pd_err *err)
{
    pd_repo *r = pd_calloc(1, sizeof(*r));
    pd_scrypt_params sp;
    json_t *doc = NULL, *kdf;
    int rc, ci, co;

    *out = NULL;
    r->repo = pd_strdup(pd_config_get(cfg, "repo"));
    r->lock_id = lock_identity(cfg);
    r->cluster = pd_strdup(pd_config_cluster(cfg));
    if ((rc = open_storage(&r->st, cfg, false, err)) < 0)
        goto fail;
    if ((rc = read_repo_json(&doc, r->st, cfg, err)) < 0)
        goto fail;
    ci = name_index(cipher_names, 2, json_string_value(json_object_get(doc, "cipher")));
    co = name_index(compression_names, 2, json_string_value(json_object_get(doc, "compression")));
    if (ci < 0 || co < 0) {
        rc = pd_err_set(err, PD_ECORRUPT,
                        "repository file \"%s/repo.json\" names an unknown "
                        "cipher or compression",
                        r->cluster);
        goto fail;
    }
    r->cipher = (pd_cipher)ci;
    r->compression = (pd_compression)co;
    // An unencrypted repository where the configuration expects encryption is
    // either a mistake or a downgrade by someone without the key: refuse.
    if (r->cipher == PD_CIPHER_NONE && strcmp(pd_config_get(cfg, "encryption"), "none") != 0) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "repository \"%s\" cluster \"%s\" is not encrypted, but the "
                        "configuration says encryption = %s",
                        r->repo, r->cluster, pd_config_get(cfg, "encryption"));
        pd_err_hint(err, "if it was created without encryption, set encryption = none; "
                         "otherwise repo.json was altered");
        goto fail;
    }
    // The level and threads are the writer's choice, from the configuration.
    r->level = (int)pd_config_get_int(cfg, "compression-level");
    r->workers = (int)pd_config_get_int(cfg, "compression-threads");
    if (r->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        r->workers = n > 1 ? (int)(n > 64 ? 64 : n) : 1;
    }
    if (r->cipher != PD_CIPHER_NONE) {
        kdf = json_object_get(doc, "kdf");
        if (kdf && kdf_parse(&sp, kdf) < 0) {
            rc = pd_err_set(err, PD_ECORRUPT,
                            "repository file \"%s/repo.json\" has bad KDF "
                            "parameters",
                            r->cluster);
            goto fail;
        }
        if ((rc = load_master(&r->master, cfg, kdf ? &sp : NULL, err)) < 0)
            goto fail;
        if ((rc = verify_master(doc, r->master, cfg, err)) < 0)
            goto fail;
        pd_key_id(r->master_id, r->master);
    }
    r->doc = doc;
    *out = r;
    return 0;
fail:
    json_decref(doc);
    pd_repo_free(r);
    return rc;
}

void
pd_repo_free(pd_repo *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < KEY_CACHE; i++)
        pd_secret_free(r->cache[i].key);
    for (size_t i = 0; i < r->n_pinned; i++)
        pd_secret_free(r->pinned[i].key);
    pd_secret_free(r->master);
    json_decref(r->doc);
    pd_storage_free(r->st);
    pd_free(r->repo);
    pd_free(r->lock_id);
    pd_free(r->cluster);
    pd_free(r);
}

pd_storage *
pd_repo_storage(pd_repo *r)
{
    return r->st;
}

const char *
pd_repo_cluster(const pd_repo *r)
{
    return r->cluster;
}

pd_cipher
pd_repo_cipher(const pd_repo *r)
{
    return r->cipher;
}

pd_compression
pd_repo_compression(const pd_repo *r)
{
    return r->compression;
}

int
pd_repo_compression_level(const pd_repo *r)
{
    return r->level;
}

int
pd_repo_compression_workers(const pd_repo *r)
{
    return r->workers;
}

const char *
pd_repo_system_identifier(const pd_repo *r)
{
    return json_string_value(json_object_get(r->doc, "system_identifier"));
}

int
pd_repo_bind_cluster(pd_repo *r, const char *system_identifier, int pg_version_num, pd_err *err)
{
    const char *have = json_string_value(json_object_get(r->doc, "system_identifier"));
    long long have_ver = json_integer_value(json_object_get(r->doc, "pg_version"));
    char *path, *text;
    int rc;

    if (have != NULL) {
        if (strcmp(have, system_identifier) != 0 || have_ver != pg_version_num / 10000) {
            pd_err_set(err, PD_ECONFIG,
                       "repository \"%s\" cluster \"%s\" holds backups of system identifier %s "
                       "(PostgreSQL %lld), but this server is system identifier %s (PostgreSQL %d)",
                       r->repo, r->cluster, have, have_ver, system_identifier,
                       pg_version_num / 10000);
            return pd_err_hint(err, "back it up into another repository or cluster name");
        }
        return 0;
    }
    json_object_set_new(r->doc, "system_identifier", json_string(system_identifier));
    json_object_set_new(r->doc, "pg_version", json_integer(pg_version_num / 10000));
    if (r->master)
        set_key_fields(r->doc, r->master);
    text = json_dumps(r->doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    path = repo_path(r->cluster, "repo.json");
    rc = put_file(r->st, path, text, false, err);
    pd_free(text);
    pd_free(path);
    return rc;
}

/* Remembers an unwrapped key; the oldest entry makes room. */
static const pd_secret *
cache_put(pd_repo *r, const unsigned char id[PD_KEY_ID_SIZE], pd_secret *key)
{
    size_t i = r->cache_next++ % KEY_CACHE;

    // Readers use a data key only while setting up an object, so evicting
    // one that a finished reader was given is safe.
    pd_secret_free(r->cache[i].key);
    memcpy(r->cache[i].id, id, PD_KEY_ID_SIZE);
    r->cache[i].key = key;
    return key;
}

static json_t *
wrapping_json(const unsigned char master_id[PD_KEY_ID_SIZE],
              const unsigned char wrapped[PD_WRAPPED_KEY_SIZE])
{
    json_t *w = json_object();

    json_object_set_new(w, "master_key_id", json_hex(master_id, PD_KEY_ID_SIZE));
    json_object_set_new(w, "wrapped_key", json_hex(wrapped, PD_WRAPPED_KEY_SIZE));
    return w;
}

static char *
key_path(const char *cluster, const unsigned char id[PD_KEY_ID_SIZE])
{
    char hex[2 * PD_KEY_ID_SIZE + 1];

    pd_hex(hex, id, PD_KEY_ID_SIZE);
    return pd_asprintf("%s/keys/%s.json", cluster, hex);
}

/*
 * The keyring lock: shared while a data key is made, exclusive during a
 * rotation, so no key file is ever wrapped only under a master key that a
 * rotation just replaced. Blocking: a rotation is short.
 */
/*
 * Where the lock of an S3 repository lives: on this host, named after the
 * cluster and a hash of lock_identity(), so that two repositories (other
 * buckets, prefixes or endpoints) with the same cluster name do not share a
 * lock.
 */
static char *
s3_lock_path(const char *id, const char *cluster, const char *what)
{
    char hash[65];

    pd_sigv4_sha256_hex(hash, id, strlen(id));
    hash[16] = '\0';
    return pd_asprintf("/tmp/pgdrill-%s-%s%s.lock", cluster, hash, what);
}

/*
 * Opens a lock file, creating it. Lock files hold no secret, and flock works
 * on a file opened read-only, so root and the repository's user can share
 * one: in a local repository a file root makes goes to the owner of the
 * cluster's directory; an S3 repository's lock file in /tmp is made 0644, and
 * one that another user made is opened read-only. Returns the descriptor or
 * a negative code.
 */
static int
open_lock(const char *path, const char *cluster_dir, pd_err *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, cluster_dir ? 0600 : 0644);
    struct stat me, dir;

    if (fd < 0 && errno == EACCES)
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        bool denied = errno == EACCES;
        int rc = pd_err_sys(err, PD_EIO, "could not open lock file \"%s\"", path);
        if (denied)
            pd_err_hint(err, "another user made it: run pgdrill as the repository's user, or "
                             "remove the file while no pgdrill runs");
        return rc;
    }
    if (fstat(fd, &me) == 0 && me.st_uid == geteuid()) {
        if (cluster_dir == NULL)
            (void)fchmod(fd, 0644); // whatever the umask
        else if (me.st_uid == 0 && stat(cluster_dir, &dir) == 0 && dir.st_uid != 0 &&
                 fchown(fd, dir.st_uid, dir.st_gid) < 0)
            pd_log_debug("could not give \"%s\" to the repository's owner", path);
    }
    return fd;
}

static int
keys_lock(const char *repo, const char *id, const char *cluster, int how, pd_err *err)
{
    bool local = repo[0] == '/';
    char *path =
        local ? pd_asprintf("%s/%s/keys.lock", repo, cluster) : s3_lock_path(id, cluster, "-keys");
    char *dir = local ? pd_asprintf("%s/%s", repo, cluster) : NULL;
    int fd = open_lock(path, dir, err);

    pd_free(dir);
    if (fd < 0) {
        pd_free(path);
        return fd;
    }
    if (flock(fd, how) < 0) {
        int rc = pd_err_sys(err, PD_EIO, "could not lock \"%s\"", path);
        if (fd >= 0)
            close(fd);
        pd_free(path);
        return rc;
    }
    pd_free(path);
    return fd;
}

/* Under the keyring lock: repo.json still names the master key we hold. */
static int
master_still_current(pd_repo *r, pd_err *err)
{
    char want[2 * PD_KEY_ID_SIZE + 1];
    char *path = repo_path(r->cluster, "repo.json");
    json_t *doc = NULL;
    int rc = get_json(&doc, r->st, path, PD_REPO_JSON_MAX, err);

    pd_hex(want, r->master_id, PD_KEY_ID_SIZE);
    if (rc == 0 && strcmp(json_string_value(json_object_get(doc, "key_id")) ?: "", want) != 0) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "the master key of cluster \"%s\" was rotated while pgdrill ran",
                        r->cluster);
        pd_err_hint(err, "set key-file to the new key and retry");
    }
    json_decref(doc);
    pd_free(path);
    return rc;
}

int
pd_repo_new_data_key(pd_repo *r, const pd_secret **key, unsigned char id[PD_KEY_ID_SIZE],
                     pd_err *err)
{
    int lock = -1;
    unsigned char wrapped[PD_WRAPPED_KEY_SIZE];
    pd_secret *dk = NULL;
    json_t *doc = NULL, *list;
    char *path = NULL, *text = NULL;
    int rc;

    *key = NULL;
    memset(id, 0, PD_KEY_ID_SIZE);
    if (r->cipher == PD_CIPHER_NONE)
        return 0;
    if ((lock = keys_lock(r->repo, r->lock_id, r->cluster, LOCK_SH, err)) < 0)
        return lock;
    if ((rc = master_still_current(r, err)) < 0)
        goto cleanup;
    if ((rc = pd_key_generate(&dk, err)) < 0)
        goto cleanup;
    pd_key_id(id, dk);
    if ((rc = pd_key_wrap(wrapped, r->master, dk, err)) < 0)
        goto cleanup;
    doc = json_object();
    json_object_set_new(doc, "key_id", json_hex(id, PD_KEY_ID_SIZE));
    json_object_set_new(doc, "created", pd_json_time(time(NULL)));
    list = json_array();
    json_array_append_new(list, wrapping_json(r->master_id, wrapped));
    json_object_set_new(doc, "wrappings", list);
    text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    path = key_path(r->cluster, id);
    if ((rc = put_file(r->st, path, text, true, err)) < 0)
        goto cleanup;
    // Pinned, not cached: the caller writes with it until pd_repo_free.
    PD_ASSERT(r->n_pinned < PINNED_KEYS);
    memcpy(r->pinned[r->n_pinned].id, id, PD_KEY_ID_SIZE);
    r->pinned[r->n_pinned++].key = dk;
    *key = dk;
    dk = NULL;
cleanup:
    if (lock >= 0)
        close(lock);
    pd_secret_free(dk);
    json_decref(doc);
    pd_free(text);
    pd_free(path);
    return rc;
}

/* Finds the wrapping for master_id in a key file's document, or NULL. */
static json_t *
find_wrapping(json_t *doc, const unsigned char master_id[PD_KEY_ID_SIZE])
{
    char hex[2 * PD_KEY_ID_SIZE + 1];
    json_t *w;
    size_t i;

    pd_hex(hex, master_id, PD_KEY_ID_SIZE);
    json_array_foreach(json_object_get(doc, "wrappings"), i, w)
    {
        const char *m = json_string_value(json_object_get(w, "master_key_id"));
        if (m && strcmp(m, hex) == 0)
            return w;
    }
    return NULL;
}

static int
unwrap_from(pd_secret **out, json_t *doc, const pd_secret *master,
            const unsigned char master_id[PD_KEY_ID_SIZE], const char *path, pd_err *err)
{
    unsigned char wrapped[PD_WRAPPED_KEY_SIZE];
    json_t *w = find_wrapping(doc, master_id);

    if (w == NULL || hex_decode(wrapped, sizeof(wrapped),
                                json_string_value(json_object_get(w, "wrapped_key"))) < 0)
        return pd_err_set(err, PD_ECORRUPT,
                          "key file \"%s\" has no data key wrapped by the repository's master key",
                          path);
    if (pd_key_unwrap(out, master, wrapped, err) < 0)
        return pd_err_set(err, PD_ECORRUPT,
                          "key file \"%s\" is corrupt: the wrapped key does not "
                          "verify",
                          path);
    return 0;
}

int
pd_repo_key_lookup(void *payload, const unsigned char id[PD_KEY_ID_SIZE], const pd_secret **key,
                   pd_err *err)
{
    pd_repo *r = payload;
    unsigned char got[PD_KEY_ID_SIZE];
    pd_secret *dk = NULL;
    json_t *doc = NULL;
    char *path;
    int rc;

    for (size_t i = 0; i < r->n_pinned; i++) {
        if (memcmp(r->pinned[i].id, id, PD_KEY_ID_SIZE) == 0) {
            *key = r->pinned[i].key;
            return 0;
        }
    }
    for (size_t i = 0; i < KEY_CACHE; i++) {
        if (r->cache[i].key && memcmp(r->cache[i].id, id, PD_KEY_ID_SIZE) == 0) {
            *key = r->cache[i].key;
            return 0;
        }
    }
    path = key_path(r->cluster, id);
    rc = get_json(&doc, r->st, path, PD_REPO_KEY_JSON_MAX, err);
    if (rc == PD_ENOTFOUND)
        rc = pd_err_set(err, PD_ECORRUPT, "its data key \"%s\" is missing from the keyring", path);
    if (rc == 0)
        rc = unwrap_from(&dk, doc, r->master, r->master_id, path, err);
    if (rc == 0) {
        pd_key_id(got, dk);
        if (memcmp(got, id, PD_KEY_ID_SIZE) != 0) {
            pd_secret_free(dk);
            rc = pd_err_set(err, PD_ECORRUPT, "key file \"%s\" holds another key", path);
        } else {
            *key = cache_put(r, id, dk);
        }
    }
    json_decref(doc);
    pd_free(path);
    return rc;
}

int
pd_repo_lock(const pd_config *cfg, pd_err *err)
{
    const char *repo = pd_config_get(cfg, "repo");
    char *path;
    int fd;

    // A local repository holds its own lock; for S3 the lock is per host
    // and repository (s3_lock_path).
    char *dir = NULL;
    if (repo[0] == '/') {
        path = pd_asprintf("%s/%s/lock", repo, pd_config_cluster(cfg));
        dir = pd_asprintf("%s/%s", repo, pd_config_cluster(cfg));
    } else {
        char *id = lock_identity(cfg);
        path = s3_lock_path(id, pd_config_cluster(cfg), "");
        pd_free(id);
    }
    fd = open_lock(path, dir, err);
    pd_free(dir);
    if (fd < 0) {
        pd_free(path);
        return fd;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        pd_err_set(err, PD_EFAIL,
                   "cluster \"%s\" is busy: another pgdrill backup, key rotation or expire is "
                   "running%s%s%s",
                   pd_config_cluster(cfg), pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
        pd_err_hint(err, "wait for it to finish");
        close(fd);
        pd_free(path);
        return PD_EFAIL;
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) < 0)
        pd_log_debug("could not record the pid in \"%s\"", path);
    pd_free(path);
    return fd;
}

/*
 * The readers' lock: restore, drill and verify hold it shared while they
 * read a backup; expire takes it exclusively, so it never removes a backup
 * under them (open_lock: root's lock file goes to the repository's owner).
 */
int
pd_repo_read_lock(const pd_config *cfg, bool exclusive, pd_err *err)
{
    const char *repo = pd_config_get(cfg, "repo");
    char *id = lock_identity(cfg);
    char *path = repo[0] == '/' ? pd_asprintf("%s/%s/readers.lock", repo, pd_config_cluster(cfg))
                                : s3_lock_path(id, pd_config_cluster(cfg), "-readers");
    char *dir = repo[0] == '/' ? pd_asprintf("%s/%s", repo, pd_config_cluster(cfg)) : NULL;
    int fd = open_lock(path, dir, err);

    pd_free(id);
    pd_free(dir);
    if (fd < 0) {
        pd_free(path);
        return -1;
    }
    if (flock(fd, exclusive ? LOCK_EX | LOCK_NB : LOCK_SH | LOCK_NB) == 0) {
        pd_free(path);
        return fd;
    }
    // Busy: a writer (expire) waits for the readers to finish, a reader
    // for expire. Either way the wait is said, once.
    if (exclusive)
        pd_log_info("waiting for the restore, drill or verify reading cluster \"%s\" to finish",
                    pd_config_cluster(cfg));
    else
        pd_log_info("waiting for expire to finish on cluster \"%s\"", pd_config_cluster(cfg));
    if (flock(fd, exclusive ? LOCK_EX : LOCK_SH) == 0) {
        pd_free(path);
        return fd;
    }
    pd_err_sys(err, PD_EIO, "could not lock \"%s\"", path);
    close(fd);
    pd_free(path);
    return -1;
}

/* ---- rotation ---- */

typedef struct rotate_ctx {
    pd_storage *st;
    const pd_secret *old_master, *new_master;
    unsigned char old_id[PD_KEY_ID_SIZE], new_id[PD_KEY_ID_SIZE];
    int phase; /* 1: add new wrappings, 3: drop old ones */
    size_t files;
    int rc;
    pd_err *err;
} rotate_ctx;

/* Test hook: PGDRILL_TEST_ROTATE_CRASH=N exits as a crash would after N file writes. */
static void
rotate_test_crash_point(void)
{
    static long writes;
    const char *n = getenv("PGDRILL_TEST_ROTATE_CRASH");

    if (n && ++writes >= strtol(n, NULL, 10))
        _exit(137);
}

static int
rotate_one(rotate_ctx *c, const char *path)
{
    unsigned char wrapped[PD_WRAPPED_KEY_SIZE];
    pd_secret *dk = NULL;
    json_t *doc = NULL, *list, *w;
    char *text = NULL;
    size_t i;
    int rc;

    if ((rc = get_json(&doc, c->st, path, PD_REPO_KEY_JSON_MAX, c->err)) < 0)
        return rc;
    list = json_object_get(doc, "wrappings");
    if (c->phase == 1) {
        if (find_wrapping(doc, c->new_id) != NULL)
            goto cleanup; // done before a crash
        if ((rc = unwrap_from(&dk, doc, c->old_master, c->old_id, path, c->err)) < 0)
            goto cleanup;
        if ((rc = pd_key_wrap(wrapped, c->new_master, dk, c->err)) < 0)
            goto cleanup;
        json_array_append_new(list, wrapping_json(c->new_id, wrapped));
    } else {
        if (find_wrapping(doc, c->new_id) == NULL) {
            rc = pd_err_set(c->err, PD_ECORRUPT,
                            "key file \"%s\" lacks a wrapping under the new key; not dropping the "
                            "old one",
                            path);
            goto cleanup;
        }
        json_t *keep = json_array();
        json_array_foreach(list, i, w)
        {
            if (w == find_wrapping(doc, c->new_id))
                json_array_append(keep, w);
        }
        if (json_array_size(keep) == json_array_size(list)) {
            json_decref(keep);
            goto cleanup;
        }
        json_object_set_new(doc, "wrappings", keep);
    }
    text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if ((rc = put_file(c->st, path, text, false, c->err)) < 0)
        goto cleanup;
    c->files++;
    rotate_test_crash_point();
cleanup:
    pd_secret_free(dk);
    json_decref(doc);
    pd_free(text);
    return rc;
}

/* Collects key file paths (listing first, rewriting after). */
typedef struct path_list {
    char **paths;
    size_t n, cap;
} path_list;

static int
collect_key_file(void *payload, const pd_storage_entry *e, pd_err *err)
{
    path_list *l = payload;
    size_t len = strlen(e->path);

    (void)err;
    if (len < 5 || strcmp(e->path + len - 5, ".json") != 0)
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->paths = pd_realloc(l->paths, l->cap * sizeof(char *));
    }
    l->paths[l->n++] = pd_strdup(e->path);
    return 0;
}

static int
rotate_phase(rotate_ctx *c, const path_list *l, int phase)
{
    int rc;

    c->phase = phase;
    for (size_t i = 0; i < l->n; i++)
        if ((rc = rotate_one(c, l->paths[i])) < 0)
            return rc;
    return 0;
}

int
pd_repo_rotate(char **summary, const pd_config *cfg, const char *new_key_file, pd_err *err)
{
    rotate_ctx c = {0};
    path_list keys = {0};
    pd_storage *st = NULL;
    pd_secret *old_master = NULL, *new_master = NULL;
    pd_scrypt_params sp;
    json_t *doc = NULL, *kdf;
    char *prefix = NULL, *text = NULL, *path = NULL;
    bool resuming = false;
    int lock = -1, klock = -1;
    int rc;

    *summary = NULL;
    c.err = err;
    if ((rc = pd_key_file_read(&new_master, new_key_file, err)) < 0)
        goto cleanup;
    if ((rc = open_storage(&st, cfg, false, err)) < 0)
        goto cleanup;
    c.st = st;
    if ((rc = read_repo_json(&doc, st, cfg, err)) < 0)
        goto cleanup;
    if (strcmp(json_string_value(json_object_get(doc, "cipher")) ?: "", "none") == 0) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "the repository of cluster \"%s\" is not encrypted; there "
                        "is no key to rotate",
                        pd_config_cluster(cfg));
        goto cleanup;
    }
    // A rotation interrupted after its switch (phase 2) resumes with the new key.
    if (verify_master(doc, new_master, cfg, err) == 0) {
        resuming = true;
    } else {
        kdf = json_object_get(doc, "kdf");
        if (kdf && kdf_parse(&sp, kdf) < 0) {
            rc = pd_err_set(err, PD_ECORRUPT,
                            "repository file \"%s/repo.json\" has bad KDF "
                            "parameters",
                            pd_config_cluster(cfg));
            goto cleanup;
        }
        pd_err_clear(err);
        if ((rc = load_master(&old_master, cfg, kdf ? &sp : NULL, err)) < 0)
            goto cleanup;
        if ((rc = verify_master(doc, old_master, cfg, err)) < 0)
            goto cleanup;
        pd_key_id(c.old_id, old_master);
    }
    pd_err_clear(err);
    c.old_master = old_master;
    c.new_master = new_master;
    pd_key_id(c.new_id, new_master);

    // No backup and no other rotation meanwhile, and no new data key
    // (archive-push does not take the cluster lock) until the rotation ends.
    if ((lock = pd_repo_lock(cfg, err)) < 0) {
        rc = lock;
        goto cleanup;
    }
    char *lock_id = lock_identity(cfg);
    klock = keys_lock(pd_config_get(cfg, "repo"), lock_id, pd_config_cluster(cfg), LOCK_EX, err);
    pd_free(lock_id);
    if (klock < 0) {
        rc = klock;
        goto cleanup;
    }
    prefix = repo_path(pd_config_cluster(cfg), "keys");
    if ((rc = pd_storage_list(st, prefix, collect_key_file, &keys, err)) < 0)
        goto cleanup;
    if (!resuming) {
        if ((rc = rotate_phase(&c, &keys, 1)) < 0)
            goto cleanup;
        // Phase 2, the switch: repo.json names the new key, without a KDF.
        json_object_del(doc, "kdf");
        json_object_set_new(doc, "key_source", json_string("key-file"));
        set_key_fields(doc, new_master);
        text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        path = repo_path(pd_config_cluster(cfg), "repo.json");
        if ((rc = put_file(st, path, text, false, err)) < 0)
            goto cleanup;
        rotate_test_crash_point();
    }
    // Phase 3 on a fresh listing: any key file without a new wrapping fails it.
    for (size_t i = 0; i < keys.n; i++)
        pd_free(keys.paths[i]);
    keys.n = 0;
    if ((rc = pd_storage_list(st, prefix, collect_key_file, &keys, err)) < 0)
        goto cleanup;
    if ((rc = rotate_phase(&c, &keys, 3)) < 0)
        goto cleanup;
    *summary = pd_asprintf("rotated the master key of cluster %s%s: %zu data key%s rewrapped; "
                           "set key-file = %s in the configuration",
                           pd_config_cluster(cfg), resuming ? " (resumed)" : "", keys.n,
                           keys.n == 1 ? "" : "s", new_key_file);
cleanup:
    for (size_t i = 0; i < keys.n; i++)
        pd_free(keys.paths[i]);
    pd_free(keys.paths);
    pd_secret_free(old_master);
    pd_secret_free(new_master);
    json_decref(doc);
    pd_storage_free(st);
    if (klock >= 0)
        close(klock);
    if (lock >= 0)
        close(lock);
    pd_free(prefix);
    pd_free(text);
    pd_free(path);
    return rc;
}
