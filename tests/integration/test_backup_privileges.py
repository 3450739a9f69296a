"""Physical backup under least privilege and with damaged pages:
a role with only LOGIN and REPLICATION is enough; a page checksum failure
reported by the server fails the backup (exit 1, nothing committed) unless
--ignore-checksum-failures."""

import json
import os

from harness import describe, error_lines, run_pgdrill, run_as_server, write_config  # noqa: F401
from harness import pg, workdir  # noqa: F401  (fixtures)


def setup_repo(workdir, pg, **extra):
    key = os.path.join(workdir, "key")
    keys = {"repo": os.path.join(workdir, "repo"), "key-file": key}
    keys.update(pg.config_lines())
    keys.update(extra)
    cfg = write_config({"main": keys}, directory=workdir)
    proc = run_pgdrill("init", "--generate-key-file", key, config=cfg)
    assert proc.returncode == 0, describe(proc)
    return cfg


def backups(cfg):
    proc = run_pgdrill("list", "--json", config=cfg)
    assert proc.returncode == 0, describe(proc)
    return json.loads(proc.stdout)


def test_replication_role_is_enough(workdir, pg):
    pg.psql("CREATE ROLE bk LOGIN REPLICATION; CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    assert pg.psql("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = 'bk'") == "f"
    cfg = setup_repo(workdir, pg, **{"pg-user": "bk"})
    proc = run_pgdrill("backup", config=cfg)
    assert proc.returncode == 0, describe(proc)
    assert [b["state"] for b in backups(cfg)] == ["complete"]
    assert run_pgdrill("verify", config=cfg).returncode == 0
    # A role without REPLICATION cannot: a clear one-line error, exit 1.
    pg.psql("CREATE ROLE nobk LOGIN")
    cfg2 = write_config({"main": {**pg.config_lines(), "repo": os.path.join(workdir, "repo"),
                                  "key-file": os.path.join(workdir, "key"), "pg-user": "nobk"}},
                        name="nobk.conf", directory=workdir)
    proc = run_pgdrill("backup", config=cfg2)
    assert proc.returncode == 1, describe(proc)
    assert len(error_lines(proc)) == 1, describe(proc)
    assert "replication" in error_lines(proc)[0].lower(), describe(proc)
    assert [b["state"] for b in backups(cfg)] == ["complete"]


def test_page_checksum_failure_fails_the_backup(workdir, pg):
    pg.psql("CREATE TABLE damaged AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 5000) g; CHECKPOINT")
    relpath = pg.psql("SELECT pg_relation_filepath('damaged')")
    cfg = setup_repo(workdir, pg)
    # The intact cluster backs up.
    ok = run_pgdrill("backup", config=cfg)
    assert ok.returncode == 0, describe(ok)
    # Flip bytes in the middle of the first page, with the server stopped so
    # no clean copy stays in shared buffers.
    pg.stop()
    path = os.path.join(pg.data, relpath)
    with open(path, "r+b") as f:
        f.seek(4000)
        b = f.read(8)
        f.seek(4000)
        f.write(bytes(x ^ 0xFF for x in b))
    pg.start()
    bad = run_pgdrill("backup", config=cfg)
    assert bad.returncode == 1, describe(bad)
    errors = error_lines(bad)
    assert len(errors) == 1 and "checksum" in errors[0], describe(bad)
    assert "--ignore-checksum-failures" in errors[0], describe(bad)
    assert [b["state"] for b in backups(cfg)].count("complete") == 1
    forced = run_pgdrill("backup", "--ignore-checksum-failures", config=cfg)
    assert forced.returncode == 0, describe(forced)
    assert [b["state"] for b in backups(cfg)].count("complete") == 2
