/*
 * CRC-32C (Castagnoli), the checksum PostgreSQL's backup_manifest uses by
 * default. Hardware (SSE 4.2) when the CPU has it, a table otherwise. No
 * Debian package provides it as a C library.
 */
#ifndef PGDRILL_COMMON_CRC32C_H
#define PGDRILL_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#define PD_CRC32C_INIT 0xFFFFFFFFu

/* Continues crc over len bytes; start with PD_CRC32C_INIT, end with pd_crc32c_final. */
uint32_t pd_crc32c_update(uint32_t crc, const void *buf, size_t len);

static inline uint32_t
pd_crc32c_final(uint32_t crc)
{
    return crc ^ 0xFFFFFFFFu;
}

#endif
