/*
 * Unit tests for pipeline/ stages and the object format: round trips over
 * sizes around the frame size and 100 MiB, for each of zstd/none x
 * aes-256-gcm/none, fed in 1-byte, odd and large chunks; and every tamper
 * case of doc/object-format.md detected with a message naming the object.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <zstd.h>

#include "common/mem.h"
#include "pipeline/object.h"

#define FRAME     PD_OBJ_FRAME_SIZE
#define HDR       PD_OBJ_HEADER_SIZE
#define FRAME_OUT (4 + FRAME + PD_OBJ_TAG_SIZE)

static const unsigned char key_id[PD_KEY_ID_SIZE] = "0123456789abcde";
static pd_secret *data_key;
static pd_secret *other_key;

/* A growing memory sink (test only; the library's stages never grow). */
typedef struct membuf {
    unsigned char *data;
    size_t len, cap;
    int finished;
} membuf;

static int
mem_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    membuf *m = payload;
    (void)err;
    if (m->len + len > m->cap) {
        m->cap = (m->len + len) * 2;
        m->data = pd_realloc(m->data, m->cap);
    }
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

static int
mem_finish(void *payload, pd_err *err)
{
    (void)err;
    ((membuf *)payload)->finished++;
    return 0;
}

static int
lookup(void *payload, const unsigned char id[PD_KEY_ID_SIZE], const pd_secret **key, pd_err *err)
{
    (void)payload;
    if (memcmp(id, key_id, PD_KEY_ID_SIZE) != 0)
        return pd_err_set(err, PD_ECORRUPT, "object refers to a data key not in the keyring");
    *key = data_key;
    return 0;
}

static int
lookup_other(void *payload, const unsigned char id[PD_KEY_ID_SIZE], const pd_secret **key,
             pd_err *err)
{
    (void)payload;
    (void)id;
    (void)err;
    *key = other_key;
    return 0;
}

static int
setup(void **state)
{
    unsigned char k[PD_KEY_SIZE];
    (void)state;
    RAND_bytes(k, sizeof(k));
    data_key = pd_secret_new(k, sizeof(k));
    RAND_bytes(k, sizeof(k));
    other_key = pd_secret_new(k, sizeof(k));
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    pd_secret_free(data_key);
    pd_secret_free(other_key);
    return 0;
}

static int
feed(pd_stage *s, const unsigned char *data, size_t len, size_t chunk, pd_err *err)
{
    int rc;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        if ((rc = pd_stage_write(s, data + off, n, err)) < 0)
            return rc;
    }
    return pd_stage_finish(s, err);
}

static void
encode(membuf *out, const unsigned char *data, size_t len, size_t chunk, pd_compression comp,
       pd_cipher cipher, const char *identity)
{
    pd_obj_write_opts wo = PD_OBJ_WRITE_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_stage *w = NULL;

    memset(out, 0, sizeof(*out));
    wo.identity = identity;
    wo.compression = comp;
    wo.zstd.level = 1;
    wo.cipher = cipher;
    wo.data_key = cipher ? data_key : NULL;
    wo.key_id = key_id;
    assert_int_equal(
        pd_obj_writer_new(&w, &wo, pd_stage_sink_new(mem_write, mem_finish, out), &err), 0);
    assert_int_equal(feed(w, data, len, chunk, &err), 0);
    assert_int_equal(out->finished, 1);
    pd_stage_free(w);
}

/* Decodes; returns the code and leaves the plaintext in out. */
static int
decode(membuf *out, const unsigned char *data, size_t len, size_t chunk, pd_cipher cipher,
       const char *identity, pd_err *err)
{
    pd_obj_read_opts ro = PD_OBJ_READ_OPTS_INIT;
    pd_stage *r = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    ro.identity = identity;
    ro.expect_cipher = cipher;
    ro.lookup = lookup;
    assert_int_equal(pd_obj_reader_new(&r, &ro, pd_stage_sink_new(mem_write, mem_finish, out), err),
                     0);
    rc = feed(r, data, len, chunk, err);
    pd_stage_free(r);
    return rc;
}

static unsigned char *
make_data(size_t len, int compressible)
{
    unsigned char *d = pd_malloc(len ? len : 1);
    if (compressible) {
        for (size_t i = 0; i < len; i++)
            d[i] = (unsigned char)("pgbench_accounts row "[i % 21] + (i / 4096) % 3);
    } else {
        for (size_t off = 0; off < len; off += 1 << 20)
            RAND_bytes(d + off, (int)(len - off < (1 << 20) ? len - off : (1 << 20)));
    }
    return d;
}

static void
round_trip(size_t len, int compressible, size_t in_chunk, size_t out_chunk)
{
    static const pd_compression comps[] = {PD_COMPRESSION_NONE, PD_COMPRESSION_ZSTD};
    static const pd_cipher ciphers[] = {PD_CIPHER_NONE, PD_CIPHER_AES_256_GCM};
    unsigned char *data = make_data(len, compressible);

    for (int c = 0; c < 2; c++) {
        for (int e = 0; e < 2; e++) {
            membuf enc, dec;
            pd_err err = PD_ERR_INIT;
            encode(&enc, data, len, in_chunk, comps[c], ciphers[e], "backups/X/base.tar");
            if (decode(&dec, enc.data, enc.len, out_chunk, ciphers[e], "backups/X/base.tar",
                       &err) != 0)
                fail_msg("len %zu comp %d cipher %d: %s", len, c, e, err.msg);
            assert_int_equal(dec.len, len);
            assert_int_equal(dec.finished, 1);
            if (len)
                assert_memory_equal(dec.data, data, len);
            if (e == 1 && len > 64)
                // Ciphertext must not contain the plaintext.
                assert_null(memmem(enc.data, enc.len, data, 64));
            pd_free(enc.data);
            pd_free(dec.data);
        }
    }
    pd_free(data);
}

static void
test_object_round_trip_small_sizes(void **state)
{
    static const size_t sizes[] = {0, 1, FRAME - 1, FRAME, FRAME + 1, 2 * FRAME + 17};
    (void)state;
    for (size_t i = 0; i < PD_ARRAY_LEN(sizes); i++) {
        round_trip(sizes[i], 0, 65521, 4093);
        round_trip(sizes[i], 1, 1 << 20, 1 << 16);
    }
}

static void
test_object_round_trip_one_byte_chunks(void **state)
{
    (void)state;
    round_trip(3000, 0, 1, 1);
    round_trip(FRAME + 1, 1, 1, 7);
}

static void
test_object_round_trip_100mib(void **state)
{
    (void)state;
    round_trip(100u << 20, 0, 4u << 20, 1 << 20);
    round_trip(100u << 20, 1, 128 << 10, 3u << 20);
}

static void
test_object_output_independent_of_chunking(void **state)
{
    unsigned char *data = make_data(3 * FRAME, 1);
    membuf a, b;
    (void)state;

    // Random salts differ, so compare the unencrypted, uncompressed frame bodies.
    encode(&a, data, 3 * FRAME, 1 << 20, PD_COMPRESSION_ZSTD, PD_CIPHER_NONE, "o");
    encode(&b, data, 3 * FRAME, 4099, PD_COMPRESSION_ZSTD, PD_CIPHER_NONE, "o");
    assert_int_equal(a.len, b.len);
    pd_free(a.data);
    pd_free(b.data);
    pd_free(data);
}

/* Encodes 3.5 frames with gcm and no compression, for tampering. */
static void
tamper_base(membuf *enc, unsigned char **data, size_t *len)
{
    *len = 3 * FRAME + FRAME / 2;
    *data = make_data(*len, 0);
    encode(enc, *data, *len, 1 << 20, PD_COMPRESSION_NONE, PD_CIPHER_AES_256_GCM,
           "backups/A/base.tar");
    assert_int_equal(enc->len, HDR + 3 * FRAME_OUT + 4 + FRAME / 2 + PD_OBJ_TAG_SIZE);
}

static void
expect_corrupt(const unsigned char *enc, size_t len, const char *identity, const char *needle)
{
    membuf dec;
    pd_err err = PD_ERR_INIT;

    assert_int_equal(decode(&dec, enc, len, 65536, PD_CIPHER_AES_256_GCM, identity, &err),
                     PD_ECORRUPT);
    assert_non_null(strstr(err.msg, identity));
    if (needle && strstr(err.msg, needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
    // Invariant 1: nothing from the failing frame on reached the sink.
    pd_free(dec.data);
}

static void
test_object_tamper_bit_flip_anywhere(void **state)
{
    membuf enc;
    unsigned char *data;
    size_t len;
    (void)state;

    tamper_base(&enc, &data, &len);
    // Intact case passes first.
    membuf dec;
    pd_err err = PD_ERR_INIT;
    assert_int_equal(
        decode(&dec, enc.data, enc.len, 65536, PD_CIPHER_AES_256_GCM, "backups/A/base.tar", &err),
        0);
    pd_free(dec.data);
    // Header, a length field, a body byte, a tag byte, the last frame.
    const size_t spots[] = {3,
                            9,
                            20,
                            40,
                            HDR + 1,
                            HDR + 4 + 100,
                            HDR + FRAME_OUT - 1,
                            HDR + 2 * FRAME_OUT + 4 + 5,
                            enc.len - 1};
    for (size_t i = 0; i < PD_ARRAY_LEN(spots); i++) {
        enc.data[spots[i]] ^= 0x10;
        expect_corrupt(enc.data, enc.len, "backups/A/base.tar", NULL);
        enc.data[spots[i]] ^= 0x10;
    }
    pd_free(enc.data);
    pd_free(data);
}

static void
test_object_tamper_truncation(void **state)
{
    membuf enc;
    unsigned char *data;
    size_t len;
    (void)state;

    tamper_base(&enc, &data, &len);
    // Cut at a frame boundary: no final frame.
    expect_corrupt(enc.data, HDR + 2 * FRAME_OUT, "backups/A/base.tar", "truncated");
    expect_corrupt(enc.data, HDR + 2 * FRAME_OUT + 10, "backups/A/base.tar", "truncated");
    expect_corrupt(enc.data, 10, "backups/A/base.tar", "header");
    expect_corrupt(enc.data, enc.len - 1, "backups/A/base.tar", "truncated");
    pd_free(enc.data);
    pd_free(data);
}

static void
test_object_tamper_frames_dropped_duplicated_reordered(void **state)
{
    membuf enc;
    unsigned char *data, *t;
    size_t len;
    (void)state;

    tamper_base(&enc, &data, &len);
    t = pd_malloc(enc.len + FRAME_OUT);
    const unsigned char *f0 = enc.data + HDR, *f1 = f0 + FRAME_OUT, *f2 = f1 + FRAME_OUT;
    const unsigned char *last = f2 + FRAME_OUT;
    size_t last_len = enc.len - (size_t)(last - enc.data);

    // Dropped frame 1.
    memcpy(t, enc.data, HDR + FRAME_OUT);
    memcpy(t + HDR + FRAME_OUT, f2, enc.len - HDR - 2 * FRAME_OUT);
    expect_corrupt(t, enc.len - FRAME_OUT, "backups/A/base.tar", "frame 1");
    // Duplicated frame 0.
    memcpy(t, enc.data, HDR + FRAME_OUT);
    memcpy(t + HDR + FRAME_OUT, f0, enc.len - HDR);
    expect_corrupt(t, enc.len + FRAME_OUT, "backups/A/base.tar", "frame 1");
    // Frames 1 and 2 swapped.
    memcpy(t, enc.data, enc.len);
    memcpy(t + HDR + FRAME_OUT, f2, FRAME_OUT);
    memcpy(t + HDR + 2 * FRAME_OUT, f1, FRAME_OUT);
    expect_corrupt(t, enc.len, "backups/A/base.tar", "frame 1");
    // Data after the final frame.
    memcpy(t, enc.data, enc.len);
    memcpy(t + enc.len, last, last_len);
    expect_corrupt(t, enc.len + last_len, "backups/A/base.tar", "follows the final frame");
    pd_free(t);
    pd_free(enc.data);
    pd_free(data);
}

static void
test_object_tamper_swapped_object(void **state)
{
    membuf enc;
    unsigned char *data;
    size_t len;
    (void)state;

    tamper_base(&enc, &data, &len);
    // The same bytes read under another backup's name fail on frame 0.
    expect_corrupt(enc.data, enc.len, "backups/B/base.tar", "frame 0");
    pd_free(enc.data);
    pd_free(data);
}

static void
test_object_wrong_key(void **state)
{
    membuf enc, dec;
    unsigned char *data;
    size_t len;
    pd_obj_read_opts ro = PD_OBJ_READ_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_stage *r = NULL;
    (void)state;

    tamper_base(&enc, &data, &len);
    memset(&dec, 0, sizeof(dec));
    ro.identity = "backups/A/base.tar";
    ro.lookup = lookup_other;
    assert_int_equal(
        pd_obj_reader_new(&r, &ro, pd_stage_sink_new(mem_write, mem_finish, &dec), &err), 0);
    assert_int_equal(feed(r, enc.data, enc.len, 1 << 20, &err), PD_ECORRUPT);
    assert_int_equal(dec.len, 0);
    pd_stage_free(r);
    pd_free(enc.data);
    pd_free(data);
}

static void
test_object_cipher_downgrade_refused(void **state)
{
    unsigned char *data = make_data(1000, 0);
    membuf enc, dec;
    pd_err err = PD_ERR_INIT;
    (void)state;

    encode(&enc, data, 1000, 1000, PD_COMPRESSION_NONE, PD_CIPHER_NONE, "o");
    assert_int_equal(decode(&dec, enc.data, enc.len, 100, PD_CIPHER_AES_256_GCM, "o", &err),
                     PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "cipher none"));
    pd_free(enc.data);
    pd_free(dec.data);
    pd_free(data);
}

static void
test_object_no_encryption_still_checksummed(void **state)
{
    unsigned char *data = make_data(FRAME + 5, 0);
    membuf enc, dec;
    pd_err err = PD_ERR_INIT;
    (void)state;

    encode(&enc, data, FRAME + 5, FRAME, PD_COMPRESSION_NONE, PD_CIPHER_NONE, "o");
    enc.data[HDR + 4 + 1000] ^= 1;
    assert_int_equal(decode(&dec, enc.data, enc.len, 4096, PD_CIPHER_NONE, "o", &err), PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "frame 0"));
    assert_int_equal(dec.len, 0);
    pd_free(enc.data);
    pd_free(dec.data);
    pd_free(data);
}

static void
test_object_bad_header_fields(void **state)
{
    unsigned char *data = make_data(100, 0);
    membuf enc, dec;
    pd_err err = PD_ERR_INIT;
    (void)state;

    encode(&enc, data, 100, 100, PD_COMPRESSION_NONE, PD_CIPHER_AES_256_GCM, "o");
    enc.data[0] = 'X';
    assert_int_equal(decode(&dec, enc.data, enc.len, 100, PD_CIPHER_AES_256_GCM, "o", &err),
                     PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "bad magic"));
    pd_free(dec.data);
    enc.data[0] = 'P';
    enc.data[8] = 9;
    assert_int_equal(decode(&dec, enc.data, enc.len, 100, PD_CIPHER_AES_256_GCM, "o", &err),
                     PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "version 9"));
    pd_free(dec.data);
    enc.data[8] = 1;
    enc.data[12] = 0x7f; // frame size far over the limit
    assert_int_equal(decode(&dec, enc.data, enc.len, 100, PD_CIPHER_AES_256_GCM, "o", &err),
                     PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "frame size"));
    pd_free(dec.data);
    pd_free(enc.data);
    pd_free(data);
}

static void
test_object_errors_are_sticky(void **state)
{
    pd_obj_read_opts ro = PD_OBJ_READ_OPTS_INIT;
    pd_err err = PD_ERR_INIT, err2 = PD_ERR_INIT;
    pd_stage *r = NULL;
    unsigned char junk[64] = {0};
    (void)state;

    ro.identity = "o";
    ro.lookup = lookup;
    assert_int_equal(pd_obj_reader_new(&r, &ro, pd_stage_null_new(), &err), 0);
    assert_int_equal(pd_stage_write(r, junk, sizeof(junk), &err), PD_ECORRUPT);
    assert_int_equal(pd_stage_write(r, junk, 1, &err2), PD_ECORRUPT);
    assert_string_equal(err.msg, err2.msg);
    assert_int_equal(pd_stage_finish(r, &err2), PD_ECORRUPT);
    pd_stage_free(r);
}

static void
test_object_hash_stage(void **state)
{
    static const char abc[] = "abc";
    unsigned char digest[32];
    char hex[65];
    uint64_t bytes;
    pd_err err = PD_ERR_INIT;
    pd_stage *h = pd_stage_hash_new(pd_stage_null_new());
    (void)state;

    assert_int_equal(pd_stage_write(h, abc, 1, &err), 0);
    assert_int_equal(pd_stage_write(h, abc + 1, 2, &err), 0);
    assert_int_equal(pd_stage_finish(h, &err), 0);
    pd_stage_hash_result(h, digest, &bytes);
    pd_hex(hex, digest, 32);
    assert_int_equal(bytes, 3);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    pd_stage_free(h);
}

static void
test_object_unzstd_truncated(void **state)
{
    unsigned char *data = make_data(500000, 1);
    membuf z;
    pd_err err = PD_ERR_INIT;
    pd_stage *c = NULL, *d = NULL;
    pd_zstd_opts zo = PD_ZSTD_OPTS_INIT;
    (void)state;

    memset(&z, 0, sizeof(z));
    assert_int_equal(pd_stage_zstd_new(&c, &zo, pd_stage_sink_new(mem_write, NULL, &z), &err), 0);
    assert_int_equal(feed(c, data, 500000, 100000, &err), 0);
    assert_int_equal(pd_stage_unzstd_new(&d, "x", 0, pd_stage_null_new(), &err), 0);
    assert_int_equal(feed(d, z.data, z.len - 3, 1000, &err), PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "truncated"));
    pd_stage_free(c);
    pd_stage_free(d);
    pd_free(z.data);
    pd_free(data);
}

static int
fail_after(void *payload, const void *buf, size_t len, pd_err *err)
{
    size_t *left = payload;
    (void)buf;
    if (len > *left)
        return pd_err_set(err, PD_EIO, "could not write: disk full (test)");
    *left -= len;
    return 0;
}

/* ---- zstd frames: the chunked writer and the parallel reader ---- */

#define ZCHUNK PD_ZSTD_CHUNK

/* Compresses len bytes of data fed in in_chunk pieces. */
static void
zcompress(membuf *out, const unsigned char *data, size_t len, size_t in_chunk,
          const pd_zstd_opts *zo)
{
    pd_err err = PD_ERR_INIT;
    pd_stage *c = NULL;

    memset(out, 0, sizeof(*out));
    assert_int_equal(pd_stage_zstd_new(&c, zo, pd_stage_sink_new(mem_write, mem_finish, out), &err),
                     0);
    assert_int_equal(feed(c, data, len, in_chunk, &err), 0);
    assert_int_equal(out->finished, 1);
    pd_stage_free(c);
}

/* Decompresses, fed in in_chunk pieces, on workers threads; returns the code. */
static int
zdecompress(membuf *out, const unsigned char *z, size_t len, size_t in_chunk, int workers,
            pd_err *err)
{
    pd_stage *d = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    assert_int_equal(pd_stage_unzstd_new(&d, "backups/Z/base.tar", workers,
                                         pd_stage_sink_new(mem_write, mem_finish, out), err),
                     0);
    rc = feed(d, z, len, in_chunk, err);
    pd_stage_free(d);
    return rc;
}

/* Checks that z is independent frames of chunk bytes of content each, the last shorter. */
static void
expect_frames(const unsigned char *z, size_t zlen, size_t len, size_t chunk)
{
    size_t off = 0, plain = 0, frames = 0;

    while (off < zlen) {
        size_t fsize = ZSTD_findFrameCompressedSize(z + off, zlen - off);
        unsigned long long content = ZSTD_getFrameContentSize(z + off, zlen - off);
        assert_false(ZSTD_isError(fsize));
        assert_true(content != ZSTD_CONTENTSIZE_UNKNOWN && content != ZSTD_CONTENTSIZE_ERROR);
        plain += content;
        frames++;
        off += fsize;
        if (off < zlen)
            assert_int_equal(content, chunk);
    }
    assert_int_equal(plain, len);
    assert_int_equal(frames, len ? (len + chunk - 1) / chunk : 1);
}

static void
test_object_zstd_frames_round_trip(void **state)
{
    static const size_t sizes[] = {0, 1, ZCHUNK - 1, ZCHUNK, ZCHUNK + 1, 5 * ZCHUNK + 4093};
    static const int workers[] = {0, 1, 2, 3};
    (void)state;

    for (size_t i = 0; i < PD_ARRAY_LEN(sizes); i++) {
        for (int compressible = 0; compressible < 2; compressible++) {
            unsigned char *data = make_data(sizes[i], compressible);
            membuf ref;
            pd_zstd_opts zo = PD_ZSTD_OPTS_INIT;
            zo.level = 1;
            zcompress(&ref, data, sizes[i], 65521, &zo);
            expect_frames(ref.data, ref.len, sizes[i], ZCHUNK);
            for (size_t w = 0; w < PD_ARRAY_LEN(workers); w++) {
                membuf z, d;
                pd_err err = PD_ERR_INIT;
                zo.workers = workers[w];
                // Output depends neither on the workers nor on the input's split.
                zcompress(&z, data, sizes[i], w % 2 ? 4099 : 1 << 20, &zo);
                assert_int_equal(z.len, ref.len);
                assert_memory_equal(z.data, ref.data, z.len);
                for (int split = 0; split < 3; split++) {
                    size_t chunk = split == 0 ? 7 : split == 1 ? 65536 + 3 : 3u << 20;
                    if (sizes[i] > ZCHUNK + 1 && split == 0)
                        chunk = 1021;
                    if (zdecompress(&d, z.data, z.len, chunk, workers[w], &err) != 0)
                        fail_msg("size %zu workers %d split %zu: %s", sizes[i], workers[w], chunk,
                                 err.msg);
                    assert_int_equal(d.len, sizes[i]);
                    assert_int_equal(d.finished, 1);
                    if (sizes[i])
                        assert_memory_equal(d.data, data, sizes[i]);
                    pd_free(d.data);
                }
                pd_free(z.data);
            }
            pd_free(ref.data);
            pd_free(data);
        }
    }
}

static void
test_object_zstd_frames_one_byte_chunks(void **state)
{
    size_t len = ZCHUNK + 1;
    unsigned char *data = make_data(len, 1);
    pd_zstd_opts zo = PD_ZSTD_OPTS_INIT;
    membuf z, d;
    pd_err err = PD_ERR_INIT;
    (void)state;

    zo.workers = 2;
    zo.chunk_size = 100000;
    zcompress(&z, data, len, 1, &zo);
    expect_frames(z.data, z.len, len, 100000);
    assert_int_equal(zdecompress(&d, z.data, z.len, 1, 2, &err), 0);
    assert_int_equal(d.len, len);
    assert_memory_equal(d.data, data, len);
    pd_free(d.data);
    pd_free(z.data);
    pd_free(data);
}

/* Objects written before independent frames (one streamed frame) still decode. */
static void
test_object_zstd_old_format_decodes(void **state)
{
    static const size_t sizes[] = {0, 1, FRAME + 1, 9u << 20};
    (void)state;

    for (size_t i = 0; i < PD_ARRAY_LEN(sizes); i++) {
        unsigned char *data = make_data(sizes[i], 1);
        pd_obj_write_opts wo = PD_OBJ_WRITE_OPTS_INIT;
        pd_err err = PD_ERR_INIT;
        pd_stage *w = NULL;
        membuf enc, dec;

        memset(&enc, 0, sizeof(enc));
        wo.identity = "backups/O/base.tar";
        wo.zstd.level = 1;
        wo.zstd.workers = 1;
        wo.zstd.stream = true;
        wo.data_key = data_key;
        wo.key_id = key_id;
        assert_int_equal(
            pd_obj_writer_new(&w, &wo, pd_stage_sink_new(mem_write, mem_finish, &enc), &err), 0);
        assert_int_equal(feed(w, data, sizes[i], 65536, &err), 0);
        pd_stage_free(w);
        for (size_t chunk = 1; chunk <= 1u << 20; chunk *= 1024) {
            if (chunk == 1 && sizes[i] > FRAME)
                continue;
            if (decode(&dec, enc.data, enc.len, chunk, PD_CIPHER_AES_256_GCM, "backups/O/base.tar",
                       &err) != 0)
                fail_msg("size %zu: %s", sizes[i], err.msg);
            assert_int_equal(dec.len, sizes[i]);
            if (sizes[i])
                assert_memory_equal(dec.data, data, sizes[i]);
            pd_free(dec.data);
        }
        pd_free(enc.data);
        pd_free(data);
    }
}

/*
 * Frames of every kind in one stream, decoded in order: chunked frames, a
 * streamed frame without content size, a skippable frame, a frame with a
 * checksum and one with a content size too large for the pool.
 */
static void
test_object_zstd_mixed_frames(void **state)
{
    size_t len = 3 * ZCHUNK + 77, big = PD_ZSTD_MAX_CHUNK + 5;
    unsigned char *data = make_data(len + big, 1);
    pd_zstd_opts zo = PD_ZSTD_OPTS_INIT;
    membuf a, b, all, d;
    pd_err err = PD_ERR_INIT;
    unsigned char skip[8 + 10] = {0x5a, 0x2a, 0x4d, 0x18, 10, 0, 0, 0};
    (void)state;

    memset(&all, 0, sizeof(all));
    zo.level = 1;
    zcompress(&a, data, ZCHUNK + 5, 999, &zo);
    zo.stream = true;
    zcompress(&b, data + ZCHUNK + 5, ZCHUNK, 999, &zo);
    // One frame without a content size, as older pgdrill wrote.
    assert_int_equal(ZSTD_findFrameCompressedSize(b.data, b.len), b.len);
    assert_true(ZSTD_getFrameContentSize(b.data, b.len) == ZSTD_CONTENTSIZE_UNKNOWN);
    mem_write(&all, a.data, a.len, &err);
    mem_write(&all, skip, sizeof(skip), &err);
    mem_write(&all, b.data, b.len, &err);
    pd_free(a.data);
    pd_free(b.data);

    // With a checksum, through libzstd's one-shot API (content size known).
    size_t rest = len - (2 * ZCHUNK + 5);
    unsigned char *c = pd_malloc(ZSTD_compressBound(big));
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1)));
    size_t clen = ZSTD_compress2(cc, c, ZSTD_compressBound(big), data + 2 * ZCHUNK + 5, rest);
    assert_false(ZSTD_isError(clen));
    mem_write(&all, c, clen, &err);
    // Larger than PD_ZSTD_MAX_CHUNK: streamed, though its size is known.
    clen = ZSTD_compress2(cc, c, ZSTD_compressBound(big), data + len, big);
    assert_false(ZSTD_isError(clen));
    mem_write(&all, c, clen, &err);
    ZSTD_freeCCtx(cc);
    pd_free(c);

    for (int w = 0; w <= 2; w += 2) {
        for (size_t chunk = 3; chunk < 1u << 22; chunk = chunk * 37 + 1) {
            if (zdecompress(&d, all.data, all.len, chunk, w, &err) != 0)
                fail_msg("workers %d chunk %zu: %s", w, chunk, err.msg);
            assert_int_equal(d.len, len + big);
            assert_memory_equal(d.data, data, len + big);
            pd_free(d.data);
        }
    }
    pd_free(all.data);
    pd_free(data);
}

/* Decodes damaged zstd bytes on 0 and 2 threads: PD_ECORRUPT naming the object, or needle. */
static void
expect_zstd_corrupt(const unsigned char *z, size_t len, const char *needle)
{
    for (int w = 0; w <= 2; w += 2) {
        for (size_t chunk = 1; chunk <= 1u << 20; chunk *= 32) {
            membuf d;
            pd_err err = PD_ERR_INIT;
            assert_int_equal(zdecompress(&d, z, len, chunk, w, &err), PD_ECORRUPT);
            assert_non_null(strstr(err.msg, "cannot decompress object \"backups/Z/base.tar\""));
            if (needle && strstr(err.msg, needle) == NULL)
                fail_msg("expected \"%s\" in \"%s\"", needle, err.msg);
            pd_free(d.data);
        }
    }
}

static void
test_object_zstd_corrupt_headers(void **state)
{
    size_t len = 2 * ZCHUNK + 1000;
    unsigned char *data = make_data(len, 1);
    pd_zstd_opts zo = PD_ZSTD_OPTS_INIT;
    membuf z;
    (void)state;

    zo.level = 1;
    zo.chunk_size = 300000;
    zcompress(&z, data, len, 1 << 20, &zo);
    unsigned char *bad = pd_malloc(z.len + 16);
    size_t f1 = ZSTD_findFrameCompressedSize(z.data, z.len); // the second frame's offset
    size_t h1 = f1 + 4 + 1 + ((z.data[f1 + 4] & 0x20) ? 0 : 1) +
                (size_t[]){(z.data[f1 + 4] & 0x20) ? 1 : 0, 2, 4, 8}[z.data[f1 + 4] >> 6];
    // h1: the second frame's first block header.

#define DAMAGE(stmt, needle)                     \
    do {                                         \
        memcpy(bad, z.data, z.len);              \
        stmt;                                    \
        expect_zstd_corrupt(bad, z.len, needle); \
    } while (0)

    DAMAGE(bad[0] ^= 1, "unknown magic");
    DAMAGE(bad[f1 + 1] ^= 0x40, "unknown magic");
    DAMAGE(bad[f1 + 4] |= 0x08, "reserved bit");
    // A non-single-segment window of 2^31, and a single-segment frame of 2^30 bytes.
    DAMAGE((bad[f1 + 4] &= (unsigned char)~0x20, bad[f1 + 5] = 21 << 3), "window");
    DAMAGE((bad[f1 + 4] = 0xa0, bad[f1 + 8] = 0x40), "window");
    DAMAGE(bad[h1] |= 0x06, "reserved block type");
    DAMAGE(bad[h1 + 2] |= 0x80, "larger than 128 KiB");
    // Block lengths off by a little: the frame no longer parses or decodes.
    DAMAGE(bad[h1 + 1] ^= 0x01, NULL);
    DAMAGE(bad[h1] ^= 0x08, NULL);
    // The content size in the header one larger or smaller than the content.
    DAMAGE(bad[f1 + 5]++, NULL);
    DAMAGE(bad[f1 + 5]--, NULL);
    // The second frame marked as having a checksum it does not have.
    DAMAGE(bad[f1 + 4] |= 0x04, NULL);
    // Cut inside a frame header, a block header, a block.
    expect_zstd_corrupt(z.data, f1 + 3, "truncated");
    expect_zstd_corrupt(z.data, f1 + 7, "truncated");
    expect_zstd_corrupt(z.data, h1 + 2, "truncated");
    expect_zstd_corrupt(z.data, h1 + 100, "truncated");
    expect_zstd_corrupt(z.data, 0, "truncated");
    // A skippable frame cut short.
    memcpy(bad, z.data, z.len);
    memcpy(bad + z.len, "\x50\x2a\x4d\x18\x08\x00\x00\x00\x01", 9);
    expect_zstd_corrupt(bad, z.len + 9, "truncated");
    // Garbage after the last frame.
    memcpy(bad + z.len, "PGDRILL", 7);
    expect_zstd_corrupt(bad, z.len + 7, "unknown magic");

    // Random bit flips: an error or (a flip in a raw block's bytes) other
    // output, never a crash; run under ASan/UBSan too.
    for (int i = 0; i < 300; i++) {
        unsigned char r[4];
        membuf d;
        pd_err err = PD_ERR_INIT;
        RAND_bytes(r, sizeof(r));
        size_t pos = ((size_t)r[0] << 16 | (size_t)r[1] << 8 | r[2]) % z.len;
        // The first 40 flips hit frame and block headers.
        if (i < 40)
            pos = (i % 2 ? f1 : h1) + (size_t)(r[0] % 8);
        memcpy(bad, z.data, z.len);
        bad[pos % z.len] ^= (unsigned char)(1u << (r[3] % 8));
        int rc = zdecompress(&d, bad, z.len, 8191, i % 3, &err);
        if (rc != 0) {
            assert_int_equal(rc, PD_ECORRUPT);
            assert_non_null(strstr(err.msg, "backups/Z/base.tar"));
        }
        pd_free(d.data);
    }
#undef DAMAGE
    pd_free(bad);
    pd_free(z.data);
    pd_free(data);
}

/* A failing sink stops the pool; freeing mid-stream joins its threads. */
static void
test_object_zstd_pool_failure_and_free(void **state)
{
    size_t len = 12 * ZCHUNK;
    unsigned char *data = make_data(len, 0);
    pd_zstd_opts zo = PD_ZSTD_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_stage *s = NULL;
    size_t left = 3 * ZCHUNK;
    membuf z;
    (void)state;

    zo.level = 1;
    zo.workers = 2;
    assert_int_equal(pd_stage_zstd_new(&s, &zo, pd_stage_sink_new(fail_after, NULL, &left), &err),
                     0);
    assert_int_equal(feed(s, data, len, 1 << 20, &err), PD_EIO);
    assert_non_null(strstr(err.msg, "disk full"));
    pd_stage_free(s);

    zcompress(&z, data, len, 1 << 20, &zo);
    left = 3 * ZCHUNK;
    assert_int_equal(
        pd_stage_unzstd_new(&s, "o", 2, pd_stage_sink_new(fail_after, NULL, &left), &err), 0);
    assert_int_equal(feed(s, z.data, z.len, 1 << 20, &err), PD_EIO);
    assert_non_null(strstr(err.msg, "disk full"));
    pd_stage_free(s);

    // Freed with jobs queued and running.
    assert_int_equal(pd_stage_zstd_new(&s, &zo, pd_stage_null_new(), &err), 0);
    assert_int_equal(pd_stage_write(s, data, len / 2, &err), 0);
    pd_stage_free(s);
    assert_int_equal(pd_stage_unzstd_new(&s, "o", 2, pd_stage_null_new(), &err), 0);
    assert_int_equal(pd_stage_write(s, z.data, z.len / 2, &err), 0);
    pd_stage_free(s);
    pd_free(z.data);
    pd_free(data);
}

/* The async stage keeps bytes in order, whatever the chunking. */
static void
test_object_async_round_trip(void **state)
{
    static const size_t chunks[] = {1, 4093, 256 * 1024, 3u << 20};
    size_t len = 9u << 20;
    unsigned char *data = make_data(len, 0);
    (void)state;

    for (size_t c = 0; c < PD_ARRAY_LEN(chunks); c++) {
        membuf out;
        pd_err err = PD_ERR_INIT;
        memset(&out, 0, sizeof(out));
        pd_stage *a =
            pd_stage_async_new(pd_stage_sink_new(mem_write, mem_finish, &out), 64 * 1024, 3);
        assert_int_equal(feed(a, data, chunks[c] == 1 ? 300000 : len, chunks[c], &err), 0);
        assert_int_equal(out.finished, 1);
        assert_int_equal(out.len, chunks[c] == 1 ? 300000 : len);
        assert_memory_equal(out.data, data, out.len);
        pd_stage_free(a);
        pd_free(out.data);
    }
    pd_free(data);
}

static void
test_object_async_downstream_failure(void **state)
{
    unsigned char buf[100000];
    size_t left = 250000;
    pd_err err = PD_ERR_INIT;
    int rc = 0;
    (void)state;

    memset(buf, 7, sizeof(buf));
    pd_stage *a = pd_stage_async_new(pd_stage_sink_new(fail_after, NULL, &left), 32 * 1024, 2);
    for (int i = 0; i < 100 && rc == 0; i++)
        rc = pd_stage_write(a, buf, sizeof(buf), &err);
    if (rc == 0)
        rc = pd_stage_finish(a, &err);
    assert_int_equal(rc, PD_EIO);
    assert_non_null(strstr(err.msg, "disk full"));
    pd_stage_free(a);
}

static void
test_object_async_free_without_finish(void **state)
{
    unsigned char buf[1000] = {0};
    pd_err err = PD_ERR_INIT;
    (void)state;

    pd_stage *a = pd_stage_async_new(pd_stage_null_new(), 4096, 2);
    assert_int_equal(pd_stage_write(a, buf, sizeof(buf), &err), 0);
    pd_stage_free(a); // joins the worker; ASan/valgrind would see a leak or race
}

/* A pull consumer hashing what it pulls; stops early after stop_after bytes if set. */
typedef struct pull_ctx {
    size_t got;
    size_t stop_after;
    unsigned char first;
    int fail;
} pull_ctx;

static int
consume(void *payload, pd_pull *p, pd_err *err)
{
    pull_ctx *c = payload;
    const void *buf;
    size_t len;
    int more;

    while ((more = pd_pull_next(p, &buf, &len)) > 0) {
        if (c->got == 0 && len > 0)
            c->first = *(const unsigned char *)buf;
        c->got += len;
        if (c->fail && c->got > 100000)
            return pd_err_set(err, PD_ECORRUPT, "archive \"x\" is damaged (test)");
        if (c->stop_after && c->got >= c->stop_after)
            return 0;
    }
    return more < 0 ? PD_EFAIL : 0;
}

static void
test_object_pull_consumer(void **state)
{
    size_t len = 5u << 20;
    unsigned char *data = make_data(len, 1);
    pd_err err = PD_ERR_INIT;
    pull_ctx c = {0, 0, 0, 0};
    (void)state;

    pd_stage *p = pd_stage_pull_new(consume, &c, 64 * 1024, 3);
    assert_int_equal(feed(p, data, len, 10007, &err), 0);
    assert_int_equal(c.got, len);
    assert_int_equal(c.first, data[0]);
    pd_stage_free(p);

    // A consumer that stops early: the rest is discarded, no error.
    pull_ctx early = {0, 200000, 0, 0};
    p = pd_stage_pull_new(consume, &early, 64 * 1024, 3);
    assert_int_equal(feed(p, data, len, 65536, &err), 0);
    assert_true(early.got >= 200000 && early.got < len);
    pd_stage_free(p);

    // A consumer that fails: its error comes back to the producer.
    pull_ctx bad = {0, 0, 0, 1};
    p = pd_stage_pull_new(consume, &bad, 64 * 1024, 3);
    assert_int_equal(feed(p, data, len, 65536, &err), PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "damaged"));
    pd_stage_free(p);

    // Freed mid-stream: the consumer is told (-1) and joined.
    pull_ctx mid = {0, 0, 0, 0};
    p = pd_stage_pull_new(consume, &mid, 64 * 1024, 3);
    assert_int_equal(pd_stage_write(p, data, 100000, &err), 0);
    pd_stage_free(p);
    pd_free(data);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object_round_trip_small_sizes),
        cmocka_unit_test(test_object_round_trip_one_byte_chunks),
        cmocka_unit_test(test_object_round_trip_100mib),
        cmocka_unit_test(test_object_output_independent_of_chunking),
        cmocka_unit_test(test_object_tamper_bit_flip_anywhere),
        cmocka_unit_test(test_object_tamper_truncation),
        cmocka_unit_test(test_object_tamper_frames_dropped_duplicated_reordered),
        cmocka_unit_test(test_object_tamper_swapped_object),
        cmocka_unit_test(test_object_wrong_key),
        cmocka_unit_test(test_object_cipher_downgrade_refused),
        cmocka_unit_test(test_object_no_encryption_still_checksummed),
        cmocka_unit_test(test_object_bad_header_fields),
        cmocka_unit_test(test_object_errors_are_sticky),
        cmocka_unit_test(test_object_hash_stage),
        cmocka_unit_test(test_object_unzstd_truncated),
        cmocka_unit_test(test_object_zstd_frames_round_trip),
        cmocka_unit_test(test_object_zstd_frames_one_byte_chunks),
        cmocka_unit_test(test_object_zstd_old_format_decodes),
        cmocka_unit_test(test_object_zstd_mixed_frames),
        cmocka_unit_test(test_object_zstd_corrupt_headers),
        cmocka_unit_test(test_object_zstd_pool_failure_and_free),
        cmocka_unit_test(test_object_async_round_trip),
        cmocka_unit_test(test_object_async_downstream_failure),
        cmocka_unit_test(test_object_async_free_without_finish),
        cmocka_unit_test(test_object_pull_consumer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
