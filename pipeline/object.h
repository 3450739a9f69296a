/*
 * The stored object format (doc/object-format.md): a 56-byte versioned
 * header, then frames. Every frame is authenticated (AES-256-GCM, or a
 * SHA-256 checksum when encryption is off) together with the header and the
 * object's identity (its repository-relative name), under a nonce made of
 * the header's random prefix, the frame counter and a last-frame flag. So a
 * flipped bit, a changed header, dropped, duplicated or reordered frames, a
 * missing final frame, and an object swapped with another are all detected;
 * decryption streams in constant memory and forwards a frame only after its
 * tag verifies.
 */
#ifndef PGDRILL_PIPELINE_OBJECT_H
#define PGDRILL_PIPELINE_OBJECT_H

#include "common/secret.h"
#include "pipeline/stage.h"

#define PD_OBJ_MAGIC          "PGDRILL" /* 7 bytes + NUL = 8 */
#define PD_OBJ_VERSION        1
#define PD_OBJ_HEADER_SIZE    56
#define PD_OBJ_FRAME_SIZE     (1024 * 1024)     /* default plaintext bytes per frame */
#define PD_OBJ_MAX_FRAME_SIZE (4 * 1024 * 1024) /* a reader refuses larger frames */
#define PD_OBJ_TAG_SIZE       16
#define PD_OBJ_DECODE_THREADS 2 /* zstd decompression threads of a parallel reader */
#define PD_OBJ_SALT_SIZE      24
#define PD_KEY_SIZE           32
#define PD_KEY_ID_SIZE        16

typedef enum pd_cipher {
    PD_CIPHER_NONE = 0,
    PD_CIPHER_AES_256_GCM = 1,
} pd_cipher;

typedef enum pd_compression {
    PD_COMPRESSION_NONE = 0,
    PD_COMPRESSION_ZSTD = 1,
} pd_compression;

typedef struct pd_obj_write_opts {
    const char *identity; /* repository-relative name, bound into every frame */
    pd_compression compression;
    pd_zstd_opts zstd;
    pd_cipher cipher;
    const pd_secret *data_key;   /* PD_KEY_SIZE bytes; borrowed; NULL with PD_CIPHER_NONE */
    const unsigned char *key_id; /* PD_KEY_ID_SIZE bytes naming data_key; borrowed */
    size_t frame_size;           /* 0: PD_OBJ_FRAME_SIZE */
} pd_obj_write_opts;

#define PD_OBJ_WRITE_OPTS_INIT                                                             \
    {                                                                                      \
        NULL, PD_COMPRESSION_ZSTD, PD_ZSTD_OPTS_INIT, PD_CIPHER_AES_256_GCM, NULL, NULL, 0 \
    }

/*
 * The writing chain: [zstd ->] seal -> next. Takes ownership of next, also on
 * failure. The options' borrowed pointers must outlive the chain.
 */
PD_MUST_CHECK int pd_obj_writer_new(pd_stage **out, const pd_obj_write_opts *opts, pd_stage *next,
                                    pd_err *err);

/*
 * Finds the data key named by key_id for a reader. Returns 0 and a borrowed
 * key that lives as long as the reader, or a code with err filled, chosen
 * by the caller: the repository's keyring answers PD_ECORRUPT (the header or
 * the keyring is damaged: a wrong master key never gets this far, it fails
 * at pd_repo_open), a tool holding one key file may answer PD_ECONFIG.
 */
typedef int (*pd_key_lookup_fn)(void *payload, const unsigned char key_id[PD_KEY_ID_SIZE],
                                const pd_secret **key, pd_err *err);

typedef struct pd_obj_read_opts {
    const char *identity;    /* the name the object must have been written under */
    pd_cipher expect_cipher; /* the repository's cipher: an object with another is refused */
    pd_key_lookup_fn lookup; /* required when expect_cipher is not none */
    void *payload;
    /*
     * Run decompression on PD_OBJ_DECODE_THREADS threads, and next with
     * everything after it on another (an async stage), so a decode uses more
     * than one core. Order, errors and the verified-before-forwarded rule are
     * unchanged.
     */
    bool parallel;
} pd_obj_read_opts;

#define PD_OBJ_READ_OPTS_INIT                         \
    {                                                 \
        NULL, PD_CIPHER_AES_256_GCM, NULL, NULL, true \
    }

/*
 * The reading chain: open -> [unzstd, as the header says ->] next. Takes
 * ownership of next, also on failure. Damage of any kind is PD_ECORRUPT with
 * a message naming the object and the frame.
 */
PD_MUST_CHECK int pd_obj_reader_new(pd_stage **out, const pd_obj_read_opts *opts, pd_stage *next,
                                    pd_err *err);

#endif
