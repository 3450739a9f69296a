"""Every command against an S3 repository (s3rver on 127.0.0.1 over HTTP,
path-style): init, backup, list, verify, restore, archive-push (PostgreSQL's
archive_command) and archive-get (the restored server's restore_command),
with a backup large enough for multipart uploads; and the driver itself
through tests/tools/pd_storetool: ListObjectsV2 pagination past 1000 keys,
DeleteObjects in batches, a multipart object read back byte for byte, an
empty object, no_overwrite, a missing object."""

import hashlib
import json
import os
import shutil

from harness import chown_to_server_user, describe, run_as_server  # noqa: F401
from harness import pg_factory, s3, workdir  # noqa: F401  (fixtures)
from s3common import (CLUSTER, PREFIX, archive_command, init_repo, one_error, pgdrill,
                      s3_config, start_restored, storetool, wait_archived)

ROWS = "SELECT count(*), sum(length(h)) FROM r"


def test_s3_every_command(pg_factory, s3, workdir):
    src = pg_factory(start=False)
    cfg = s3_config(workdir, s3, src)
    src.set(wal_level="replica", archive_mode="on", archive_command=archive_command(cfg))
    src.start()
    init_repo(cfg, workdir)
    assert f"{PREFIX}/{CLUSTER}/repo.json" in s3.objects(PREFIX), s3.objects()

    # ~40 MiB of barely compressible rows: base.tar goes up in several parts.
    src.psql("CREATE TABLE r AS SELECT g, md5(random()::text) || md5(random()::text) || "
             "md5(random()::text) AS h FROM generate_series(1, 300000) g")
    proc = pgdrill("backup", "--json", cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    backup_id = json.loads(proc.stdout)["id"]
    objects = s3.objects(f"{PREFIX}/{CLUSTER}/backups/{backup_id}/")
    assert f"{PREFIX}/{CLUSTER}/backups/{backup_id}/manifest.json" in objects, objects
    sizes = {o: os.path.getsize(os.path.join(s3.data, s3.bucket, o + "._S3rver_object"))
             for o in objects}
    assert max(sizes.values()) > 8 * 1024 * 1024, sizes  # multipart happened

    proc = pgdrill("list", "--json", cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    listed = {b["id"]: b for b in json.loads(proc.stdout)}
    assert listed[backup_id]["state"] == "complete", listed
    proc = pgdrill("verify", "--backup", backup_id, cfg=cfg)
    assert proc.returncode == 0, describe(proc)

    # WAL after the backup reaches S3 through archive_command ...
    src.psql("INSERT INTO r SELECT g, 'after' FROM generate_series(1, 1000) g")
    want = src.psql(ROWS)
    seg = src.psql("SELECT pg_walfile_name(pg_switch_wal())")
    # A copy before the archiver is done with it (PostgreSQL may recycle
    # the file once it is archived).
    copies = os.path.join(workdir, "copies")
    os.mkdir(copies)
    seg_path = os.path.join(copies, seg)
    shutil.copyfile(os.path.join(src.data, "pg_wal", seg), seg_path)
    chown_to_server_user(copies)
    chown_to_server_user(seg_path)
    wait_archived(s3, src, seg)
    # ... and pushing the same segment again is success (same content).
    proc = pgdrill("archive-push", seg_path, cfg=cfg)
    assert proc.returncode == 0, describe(proc)

    # archive-get writes the segment back whole.
    got = os.path.join(workdir, "got-" + seg)
    proc = pgdrill("archive-get", seg, got, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    assert os.path.getsize(got) == 16 * 1024 * 1024
    with open(seg_path, "rb") as a, open(got, "rb") as b:
        assert a.read() == b.read()
    # A segment never archived: non-zero, and no file.
    missing = os.path.join(workdir, "missing")
    proc = pgdrill("archive-get", "0000000100000099000000FF", missing, cfg=cfg)
    assert proc.returncode != 0, describe(proc)
    assert not os.path.exists(missing)

    # restore fetches the backup from S3; recovery fetches WAL with archive-get.
    target = os.path.join(workdir, "restored")
    proc = pgdrill("restore", "--target-dir", target, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    restored = start_restored(target)
    try:
        assert restored.psql(ROWS) == want
    finally:
        restored.destroy()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_s3_driver_pagination_batches_multipart(s3, workdir):
    cfg = s3_config(workdir, s3)

    # 2500 objects: three ListObjectsV2 pages, three DeleteObjects batches.
    proc = storetool(cfg, "putmany", "many", 2500)
    assert proc.returncode == 0, proc.stderr
    assert len(s3.objects(f"{PREFIX}/many/")) == 2500
    proc = storetool(cfg, "list", "many")
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.decode().split("\n")[:-1]
    assert sorted(line.split()[0] for line in listed) == [f"many/o-{i:05d}" for i in range(2500)]
    assert all(line.split()[1] == "10" for line in listed)
    # A prefix names a level: "man" lists nothing.
    assert storetool(cfg, "list", "man").stdout == b""
    proc = storetool(cfg, "rmprefix", "many")
    assert proc.returncode == 0, proc.stderr
    assert s3.objects(f"{PREFIX}/many/") == []

    # 20 MiB + 1 byte: parts of 8, 8 and 4 MiB + 1, read back in 4 MiB ranges.
    data = os.urandom(20 * 1024 * 1024 + 1)
    proc = storetool(cfg, "put", "big/one", input=data)
    assert proc.returncode == 0, proc.stderr
    proc = storetool(cfg, "stat", "big/one")
    assert proc.stdout.split()[0] == str(len(data)).encode()
    proc = storetool(cfg, "get", "big/one")
    assert proc.returncode == 0, proc.stderr
    assert sha(proc.stdout) == sha(data)

    # Exactly one part's worth: a single PUT; then an empty object.
    data = os.urandom(8 * 1024 * 1024)
    assert storetool(cfg, "put", "big/two", input=data).returncode == 0
    assert sha(storetool(cfg, "get", "big/two").stdout) == sha(data)
    assert storetool(cfg, "put", "empty", input=b"").returncode == 0
    proc = storetool(cfg, "get", "empty")
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr

    # no_overwrite keeps what is there.
    proc = storetool(cfg, "put", "big/two", "--no-overwrite", input=b"other")
    assert proc.returncode == 1, proc.stderr
    assert b"the object exists already" in proc.stderr
    assert sha(storetool(cfg, "get", "big/two").stdout) == sha(data)

    # A missing object: exit 1 naming it.
    proc = storetool(cfg, "get", "nothing/here")
    assert proc.returncode == 1
    assert (b'object "nothing/here" does not exist in repository "s3://pgdrill-test/ci"'
            in proc.stderr), proc.stderr
    assert storetool(cfg, "rm", "nothing/here").returncode == 0


def test_s3_check_sees_wal_arrive(pg_factory, s3, workdir):
    src = pg_factory(start=False)
    cfg = s3_config(workdir, s3, src)
    src.set(wal_level="replica", archive_mode="on", archive_command=archive_command(cfg))
    src.start()
    init_repo(cfg, workdir)
    proc = pgdrill("check", cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    assert "reached the repository" in proc.stdout + proc.stderr, describe(proc)
