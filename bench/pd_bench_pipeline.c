/*
 * pd_bench_pipeline: the backup chain over stdin and stdout, for
 * bench/pipeline. It builds exactly the chain a backup and a restore run:
 *
 *   encode: sha256(plaintext) -> object writer (zstd, AES-256-GCM)
 *           -> sha256(stored bytes) -> stdout
 *   decode: sha256(stored bytes) -> object reader (open, unzstd)
 *           -> sha256(plaintext) -> stdout
 *
 *   pd_bench_pipeline encode|decode --key-file FILE [--level 1..19]
 *       [--workers 0..64] [--identity NAME] [--compression zstd|none]
 *       [--cipher aes-256-gcm|none] [--no-hash] [--read-size BYTES]
 *       [--frame-size BYTES]
 *
 * stdin is read with read(2) and stdout written with write(2). At the end one
 * JSON line goes to stderr: bytes in and out, seconds on CLOCK_MONOTONIC
 * (from before the chain is built to after finish), the CPU time and peak
 * RSS of the process, and both SHA-256s. --compression none, --cipher none
 * and --no-hash take a stage out, for a time breakdown; the default is the
 * real chain. Exit statuses are pgdrill's: 0 ok, 2 usage or wrong key,
 * 3 corrupt input, 1 anything else.
 *
 * Invariant: memory is constant (one read buffer plus the stages' fixed
 * buffers), whatever the size of the input.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/mem.h"
#include "common/secret.h"
#include "pipeline/keys.h"
#include "pipeline/object.h"
#include "pipeline/stage.h"

#define PROG              "pd_bench_pipeline"
#define DEFAULT_IDENTITY  "bench/pipeline.tar"
#define MAX_READ_SIZE     (16 * 1024 * 1024)
#define SHA256_HEX_BUFLEN (2 * 32 + 1)

static const char usage_text[] =
    "usage: " PROG " encode --key-file FILE [--level 1..19] [--workers 0..64]\n"
    "                         [--identity NAME] [--compression zstd|none]\n"
    "                         [--cipher aes-256-gcm|none] [--no-hash]\n"
    "                         [--read-size BYTES] [--frame-size BYTES]  < plain > stored\n"
    "       " PROG " decode --key-file FILE [--identity NAME] [--cipher aes-256-gcm|none]\n"
    "                         [--no-hash] [--read-size BYTES]             < stored > plain\n"
    "One JSON line with bytes, seconds and both SHA-256s goes to stderr.\n";

typedef struct bench_args {
    bool encode;
    bool hash;
    const char *identity;
    const char *key_file;
    pd_compression compression;
    pd_cipher cipher;
    pd_zstd_opts zstd;
    size_t frame_size;
    size_t read_size;
} bench_args;

/* The data key from the key file and its id, for the reader's lookup. */
typedef struct bench_key {
    pd_secret *key;
    unsigned char id[PD_KEY_ID_SIZE];
    const char *path;
} bench_key;

/* What the run measured, for the JSON line. */
typedef struct bench_result {
    uint64_t bytes_in, bytes_out;
    double seconds;
    bool hashed;
    char sha256_plain[SHA256_HEX_BUFLEN];
    char sha256_stored[SHA256_HEX_BUFLEN];
} bench_result;

/* A decimal in [min, max], the whole string. */
static int
parse_long(const char *s, long min, long max, const char *what, long *out, pd_err *err)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return pd_err_set(err, PD_EUSAGE, "invalid %s \"%s\": expected an integer from %ld to %ld",
                          what, s, min, max);
    *out = v;
    return 0;
}

/* Returns 0, 1 for --help, or PD_EUSAGE. */
static int
parse_args(bench_args *a, int argc, char **argv, pd_err *err)
{
    static const struct option longopts[] = {
        {"key-file", required_argument, NULL, 'k'},
        {"level", required_argument, NULL, 'l'},
        {"workers", required_argument, NULL, 'w'},
        {"identity", required_argument, NULL, 'i'},
        {"compression", required_argument, NULL, 'c'},
        {"cipher", required_argument, NULL, 'e'},
        {"no-hash", no_argument, NULL, 'n'},
        {"read-size", required_argument, NULL, 'r'},
        {"frame-size", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool encode_only = false;
    long v;
    int opt, rc;

    if (argc < 2)
        return pd_err_set(err, PD_EUSAGE, "missing command: encode or decode");
    if (strcmp(argv[1], "encode") == 0)
        a->encode = true;
    else if (strcmp(argv[1], "decode") == 0)
        a->encode = false;
    else if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return 1;
    else
        return pd_err_set(err, PD_EUSAGE, "unknown command \"%s\": expected encode or decode",
                          argv[1]);

    optind = 2;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'k':
            a->key_file = optarg;
            break;
        case 'l':
            // Levels above 19 need a window the reader refuses (PD_ZSTD_MAX_WINDOW_LOG).
            encode_only = true;
            if ((rc = parse_long(optarg, 1, 19, "zstd level", &v, err)) < 0)
                return rc;
            a->zstd.level = (int)v;
            break;
        case 'w':
            encode_only = true;
            if ((rc = parse_long(optarg, 0, 64, "number of zstd workers", &v, err)) < 0)
                return rc;
            a->zstd.workers = (int)v;
            break;
        case 'i':
            a->identity = optarg;
            break;
        case 'c':
            encode_only = true;
            if (strcmp(optarg, "zstd") == 0)
                a->compression = PD_COMPRESSION_ZSTD;
            else if (strcmp(optarg, "none") == 0)
                a->compression = PD_COMPRESSION_NONE;
            else
                return pd_err_set(err, PD_EUSAGE,
                                  "unknown compression \"%s\": expected zstd or none", optarg);
            break;
        case 'e':
            if (strcmp(optarg, "aes-256-gcm") == 0)
                a->cipher = PD_CIPHER_AES_256_GCM;
            else if (strcmp(optarg, "none") == 0)
                a->cipher = PD_CIPHER_NONE;
            else
                return pd_err_set(err, PD_EUSAGE,
                                  "unknown cipher \"%s\": expected aes-256-gcm or none", optarg);
            break;
        case 'n':
            a->hash = false;
            break;
        case 'r':
            if ((rc = parse_long(optarg, 1, MAX_READ_SIZE, "read size", &v, err)) < 0)
                return rc;
            a->read_size = (size_t)v;
            break;
        case 'f':
            encode_only = true;
            if ((rc = parse_long(optarg, 1, PD_OBJ_MAX_FRAME_SIZE, "frame size", &v, err)) < 0)
                return rc;
            a->frame_size = (size_t)v;
            break;
        case 'h':
            return 1;
        case ':':
            return pd_err_set(err, PD_EUSAGE, "option \"%s\" needs a value", argv[optind - 1]);
        default:
            return pd_err_set(err, PD_EUSAGE, "unknown option \"%s\"", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return pd_err_set(err, PD_EUSAGE, "unexpected argument \"%s\"", argv[optind]);
    if (!a->encode && encode_only)
        return pd_err_set(err, PD_EUSAGE,
                          "decode takes no --compression, --level, --workers or --frame-size "
                          "(the object's header says)");
    if (a->cipher != PD_CIPHER_NONE && a->key_file == NULL)
        return pd_err_set(err, PD_EUSAGE, "cipher aes-256-gcm needs --key-file");
    if (a->cipher == PD_CIPHER_NONE && a->key_file != NULL)
        return pd_err_set(err, PD_EUSAGE, "cipher none takes no --key-file");
    return 0;
}

/* The reader's key lookup: the one key we have, if the object names it. */
static int
lookup_key(void *payload, const unsigned char key_id[PD_KEY_ID_SIZE], const pd_secret **key,
           pd_err *err)
{
    const bench_key *k = payload;
    char want[2 * PD_KEY_ID_SIZE + 1], have[2 * PD_KEY_ID_SIZE + 1];

    if (memcmp(key_id, k->id, PD_KEY_ID_SIZE) != 0) {
        pd_hex(want, key_id, PD_KEY_ID_SIZE);
        pd_hex(have, k->id, PD_KEY_ID_SIZE);
        return pd_err_set(err, PD_ECONFIG,
                          "it was written with data key %s but key file \"%s\" holds key %s", want,
                          k->path, have);
    }
    *key = k->key;
    return 0;
}

/* The sink: all of buf to stdout, retrying short writes and EINTR; counts bytes. */
static int
stdout_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    uint64_t *bytes_out = payload;
    const unsigned char *p = buf;

    *bytes_out += len;
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return pd_err_sys(err, PD_EIO, "could not write to standard output");
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Pumps stdin through the chain in reads of up to size bytes, and finishes it. */
static int
pump(pd_stage *chain, unsigned char *buf, size_t size, uint64_t *bytes_in, pd_err *err)
{
    int rc;

    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return pd_err_sys(err, PD_EIO, "could not read standard input");
        }
        if (n == 0)
            break;
        *bytes_in += (uint64_t)n;
        if ((rc = pd_stage_write(chain, buf, (size_t)n, err)) < 0)
            return rc;
    }
    return pd_stage_finish(chain, err);
}

static double
mono_seconds(void)
{
    struct timespec ts;

    PD_ASSERT(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The hex SHA-256 of a finished hash stage. */
static void
hash_hex(const pd_stage *h, char out[SHA256_HEX_BUFLEN])
{
    unsigned char digest[32];
    uint64_t bytes = 0;

    pd_stage_hash_result(h, digest, &bytes);
    pd_hex(out, digest, sizeof(digest));
}

/*
 * Builds the chain (see the file comment) with the sink writing to stdout,
 * runs stdin through it and fills res. plain_hash and stored_hash are
 * borrowed pointers into the chain, NULL with --no-hash.
 */
static int
run(const bench_args *a, bench_result *res, pd_err *err)
{
    bench_key k = {NULL, {0}, a->key_file};
    pd_stage *chain = NULL, *obj = NULL, *sink;
    pd_stage *plain_hash = NULL, *stored_hash = NULL;
    unsigned char *buf = NULL;
    double start = mono_seconds();
    int rc;

    if (a->key_file != NULL) {
        if ((rc = pd_key_file_read(&k.key, a->key_file, err)) < 0)
            goto cleanup;
        pd_key_id(k.id, k.key);
    }
    sink = pd_stage_sink_new(stdout_write, NULL, &res->bytes_out);
    if (a->encode) {
        pd_obj_write_opts wo = PD_OBJ_WRITE_OPTS_INIT;
        pd_stage *below = a->hash ? (stored_hash = pd_stage_hash_new(sink)) : sink;

        wo.identity = a->identity;
        wo.compression = a->compression;
        wo.zstd = a->zstd;
        wo.cipher = a->cipher;
        wo.data_key = k.key;
        wo.key_id = k.key ? k.id : NULL;
        wo.frame_size = a->frame_size;
        // Takes below (and the sink under it) even on failure.
        if ((rc = pd_obj_writer_new(&obj, &wo, below, err)) < 0)
            goto cleanup;
        chain = a->hash ? (plain_hash = pd_stage_hash_new(obj)) : obj;
    } else {
        pd_obj_read_opts ro = PD_OBJ_READ_OPTS_INIT;
        pd_stage *below = a->hash ? (plain_hash = pd_stage_hash_new(sink)) : sink;

        ro.identity = a->identity;
        ro.expect_cipher = a->cipher;
        ro.lookup = lookup_key;
        ro.payload = &k;
        if ((rc = pd_obj_reader_new(&obj, &ro, below, err)) < 0)
            goto cleanup;
        chain = a->hash ? (stored_hash = pd_stage_hash_new(obj)) : obj;
    }
    buf = pd_malloc(a->read_size);
    if ((rc = pump(chain, buf, a->read_size, &res->bytes_in, err)) < 0)
        goto cleanup;
    res->seconds = mono_seconds() - start;
    res->hashed = a->hash;
    if (a->hash) {
        hash_hex(plain_hash, res->sha256_plain);
        hash_hex(stored_hash, res->sha256_stored);
    }
cleanup:
    pd_stage_free(chain);
    pd_free(buf);
    pd_secret_free(k.key);
    return rc;
}

static double
timeval_seconds(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* The JSON line on stderr; digests are null with --no-hash. */
static void
print_result(const bench_args *a, const bench_result *res)
{
    struct rusage ru;
    char plain[SHA256_HEX_BUFLEN + 2] = "null", stored[SHA256_HEX_BUFLEN + 2] = "null";

    memset(&ru, 0, sizeof(ru));
    (void)getrusage(RUSAGE_SELF, &ru);
    if (res->hashed) {
        snprintf(plain, sizeof(plain), "\"%s\"", res->sha256_plain);
        snprintf(stored, sizeof(stored), "\"%s\"", res->sha256_stored);
    }
    fprintf(stderr,
            "{\"mode\":\"%s\",\"compression\":\"%s\",\"cipher\":\"%s\",\"level\":%d,"
            "\"workers\":%d,\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 ",\"seconds\":%.6f,"
            "\"user_seconds\":%.3f,\"sys_seconds\":%.3f,\"max_rss_kib\":%ld,"
            "\"sha256_plain\":%s,\"sha256_stored\":%s}\n",
            a->encode ? "encode" : "decode",
            a->encode ? (a->compression == PD_COMPRESSION_ZSTD ? "zstd" : "none") : "header",
            a->cipher == PD_CIPHER_AES_256_GCM ? "aes-256-gcm" : "none",
            a->encode ? a->zstd.level : 0, a->encode ? a->zstd.workers : 0, res->bytes_in,
            res->bytes_out, res->seconds, timeval_seconds(&ru.ru_utime),
            timeval_seconds(&ru.ru_stime), ru.ru_maxrss, plain, stored);
}

int
main(int argc, char **argv)
{
    bench_args a = {false,
                    true,
                    DEFAULT_IDENTITY,
                    NULL,
                    PD_COMPRESSION_ZSTD,
                    PD_CIPHER_AES_256_GCM,
                    PD_ZSTD_OPTS_INIT,
                    0,
                    1024 * 1024}; // reads of 1 MiB, as PostgreSQL's tar arrives in big chunks
    bench_result res;
    pd_err err = PD_ERR_INIT;
    char line[PD_ERR_MSG_MAX + PD_ERR_HINT_MAX + 8];
    int rc;

    memset(&res, 0, sizeof(res));
    a.zstd.level = 1;
    a.zstd.workers = 1;
    // A closed reader of stdout is an error to report, not a silent death.
    signal(SIGPIPE, SIG_IGN);
    rc = parse_args(&a, argc, argv, &err);
    if (rc > 0) {
        fputs(usage_text, stdout);
        return PD_EXIT_OK;
    }
    if (rc == 0)
        rc = run(&a, &res, &err);
    if (rc == 0) {
        print_result(&a, &res);
        return PD_EXIT_OK;
    }
    pd_err_format(&err, line, sizeof(line));
    fprintf(stderr, PROG ": error: %s\n", line);
    if (rc == PD_EUSAGE)
        fputs("try \"" PROG " --help\"\n", stderr);
    return pd_err_exit_code(rc);
}
