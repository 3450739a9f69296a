/*
 * pd_objtool: encodes stdin into a stored object (doc/object-format.md) on
 * stdout, or decodes one back, through libpgdrill's object writer and reader.
 * For the object format tests, benchmarks and fuzz regressions:
 *
 *   pd_objtool encode --identity NAME [--compression zstd|none]
 *                     [--cipher aes-256-gcm|none] [--key-file F] [--level N]
 *                     [--workers N] [--frame-size N]   < plain > object
 *   pd_objtool decode --identity NAME [--cipher aes-256-gcm|none]
 *                     [--key-file F]                     < object > plain
 *
 * The data key is the 32-byte key file (mode 0600), named by its key id
 * pd_key_id(key). Exit statuses are pgdrill's: 0 ok, 2 usage or wrong key,
 * 3 a corrupt object (PD_ECORRUPT), 1 anything else; the message goes to
 * stderr. decode writes a frame's plaintext only after its tag verified, but
 * frames before a damaged one have been written by then: only exit 0 means
 * the whole output is good.
 *
 * Invariant: memory is constant (one PD_STAGE_BUF input buffer plus the
 * stages' fixed buffers), whatever the size of the input.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mem.h"
#include "common/secret.h"
#include "pipeline/keys.h"
#include "pipeline/object.h"
#include "pipeline/stage.h"

#define PROG "pd_objtool"

static const char usage_text[] =
    "usage: " PROG " encode --identity NAME [--compression zstd|none]\n"
    "                  [--cipher aes-256-gcm|none] [--key-file FILE] [--level 1..19]\n"
    "                  [--workers N] [--frame-size BYTES]   < plain > object\n"
    "       " PROG " decode --identity NAME [--cipher aes-256-gcm|none]\n"
    "                  [--key-file FILE]                      < object > plain\n";

typedef struct tool_args {
    bool encode;
    const char *identity;
    const char *key_file;
    pd_compression compression;
    pd_cipher cipher;
    pd_zstd_opts zstd;
    size_t frame_size;
} tool_args;

/* The data key from the key file and its id, for the reader's lookup. */
typedef struct tool_key {
    pd_secret *key;
    unsigned char id[PD_KEY_ID_SIZE];
    const char *path;
} tool_key;

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

static int
parse_args(tool_args *a, int argc, char **argv, pd_err *err)
{
    static const struct option longopts[] = {
        {"identity", required_argument, NULL, 'i'},
        {"compression", required_argument, NULL, 'c'},
        {"cipher", required_argument, NULL, 'e'},
        {"key-file", required_argument, NULL, 'k'},
        {"level", required_argument, NULL, 'l'},
        {"workers", required_argument, NULL, 'w'},
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
        case 'k':
            a->key_file = optarg;
            break;
        case 'l':
            // libzstd takes up to 22, but levels above 19 need a window the
            // reader refuses (PD_ZSTD_MAX_WINDOW_LOG).
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
    if (a->identity == NULL)
        return pd_err_set(err, PD_EUSAGE, "missing --identity");
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
    const tool_key *k = payload;
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

/* The sink: all of buf to stdout, retrying short writes and EINTR. */
static int
stdout_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    const unsigned char *p = buf;

    (void)payload;
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

/* Pumps stdin through the chain and finishes it. */
static int
pump(pd_stage *chain, unsigned char *buf, pd_err *err)
{
    int rc;

    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, PD_STAGE_BUF);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return pd_err_sys(err, PD_EIO, "could not read standard input");
        }
        if (n == 0)
            break;
        if ((rc = pd_stage_write(chain, buf, (size_t)n, err)) < 0)
            return rc;
    }
    return pd_stage_finish(chain, err);
}

static int
run(const tool_args *a, pd_err *err)
{
    tool_key k = {NULL, {0}, a->key_file};
    pd_stage *chain = NULL;
    unsigned char *buf = NULL;
    int rc;

    if (a->key_file != NULL) {
        if ((rc = pd_key_file_read(&k.key, a->key_file, err)) < 0)
            goto cleanup;
        pd_key_id(k.id, k.key);
    }
    if (a->encode) {
        pd_obj_write_opts wo = PD_OBJ_WRITE_OPTS_INIT;
        wo.identity = a->identity;
        wo.compression = a->compression;
        wo.zstd = a->zstd;
        wo.cipher = a->cipher;
        wo.data_key = k.key;
        wo.key_id = k.key ? k.id : NULL;
        wo.frame_size = a->frame_size;
        rc = pd_obj_writer_new(&chain, &wo, pd_stage_sink_new(stdout_write, NULL, NULL), err);
    } else {
        pd_obj_read_opts ro = PD_OBJ_READ_OPTS_INIT;
        ro.identity = a->identity;
        ro.expect_cipher = a->cipher;
        ro.lookup = lookup_key;
        ro.payload = &k;
        rc = pd_obj_reader_new(&chain, &ro, pd_stage_sink_new(stdout_write, NULL, NULL), err);
    }
    if (rc < 0)
        goto cleanup;
    buf = pd_malloc(PD_STAGE_BUF);
    rc = pump(chain, buf, err);
cleanup:
    pd_stage_free(chain);
    pd_free(buf);
    pd_secret_free(k.key);
    return rc;
}

int
main(int argc, char **argv)
{
    tool_args a = {false, NULL, NULL, PD_COMPRESSION_ZSTD, PD_CIPHER_AES_256_GCM, PD_ZSTD_OPTS_INIT,
                   0};
    pd_err err = PD_ERR_INIT;
    char line[PD_ERR_MSG_MAX + PD_ERR_HINT_MAX + 8];
    int rc;

    // A closed reader of stdout is an error to report, not a silent death.
    signal(SIGPIPE, SIG_IGN);
    rc = parse_args(&a, argc, argv, &err);
    if (rc > 0) {
        fputs(usage_text, stdout);
        return PD_EXIT_OK;
    }
    if (rc == 0)
        rc = run(&a, &err);
    if (rc == 0)
        return PD_EXIT_OK;
    pd_err_format(&err, line, sizeof(line));
    fprintf(stderr, PROG ": error: %s\n", line);
    if (rc == PD_EUSAGE)
        fputs("try \"" PROG " --help\"\n", stderr);
    return pd_err_exit_code(rc);
}
