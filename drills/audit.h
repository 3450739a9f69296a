/*
 * The operator's least-privilege checklist for pgdrill check: what the role
 * pgdrill connects as may do beyond what backups need, who else may read the
 * key, configuration and repository, whether pg_hba.conf lets replication
 * in with trust from the network, and whether the repository is encrypted.
 * Findings only report; nothing here changes the server or a file.
 */
#ifndef PGDRILL_DRILLS_AUDIT_H
#define PGDRILL_DRILLS_AUDIT_H

#include <jansson.h>
#include <stdbool.h>

#include "common/config.h"
#include "common/pg.h"

/*
 * Appends findings to the array findings, each {severity, check, message}:
 * severity "critical" (a secret or the database is exposed), "warning"
 * (more privilege than needed, or a setting that weakens the backups) or
 * "info" (something could not be inspected: never a silent clean result).
 * The message names the fix. pg may be NULL (the database is not reachable:
 * one info finding says the role was not inspected). cipher is the
 * repository's (0 none, 1 aes-256-gcm) or -1 when the repository did not
 * open (the configured encryption is used then).
 */
void pd_audit_run(json_t *findings, const pd_config *cfg, pd_pg *pg, int cipher);

/*
 * True when a pg_hba.conf host rule's address, with its netmask as
 * pg_hba_file_rules shows it, admits only this machine: a network inside
 * 127.0.0.0/8, ::1/128, "localhost", "samehost". NULL, "all", "samenet",
 * other host names and wider networks admit the network. Pure; for tests.
 */
bool pd_audit_address_is_local(const char *address, const char *netmask);

#endif
