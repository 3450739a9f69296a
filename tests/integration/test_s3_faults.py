"""S3 under real faults: tests/faultproxy.js (mockttp) between pgdrill and
s3rver, and s3rver itself killed (-9) or stopped (-STOP). Every test first
checks that the fault fired (the proxy logs it), so none can pass by the
fault never happening.

- transient faults (connection reset, close without answer, 500, 503
  SlowDown, a delay, a CompleteMultipartUpload answered 200 with <Error>):
  backup succeeds after retries and verifies;
- a fault that does not go away: backup fails with exit 1 and commits
  nothing (no manifest.json, nothing `list` calls complete);
- archive-push returns 0 only with the segment stored: with s3rver killed it
  fails and stores nothing; with s3rver stopped for a while it waits, and a
  hung connection is timed out and retried;
- reads: a truncated body resumes with a Range (archive-get writes the
  segment whole); a flipped byte makes restore and archive-get fail without
  writing a corrupt file."""

import json
import os
import shutil
import signal
import threading
import time

import pytest

from harness import FaultProxy, chown_to_server_user, describe
from harness import pg, s3, workdir  # noqa: F401  (fixtures)
from s3common import CLUSTER, PREFIX, init_repo, pgdrill, s3_config

SEG = 16 * 1024 * 1024


@pytest.fixture
def proxy(s3):
    p = FaultProxy(s3).start()
    yield p
    p.stop()


def committed(s3):
    return [o for o in s3.objects(f"{PREFIX}/{CLUSTER}/backups/") if o.endswith("/manifest.json")]


def big_table(pg):
    # ~30 MiB of barely compressible rows: base.tar is a multipart upload.
    pg.psql("CREATE TABLE r AS SELECT g, md5(random()::text) || md5(random()::text) AS h "
            "FROM generate_series(1, 300000) g")


def test_backup_survives_transient_faults(pg, proxy, s3, workdir):
    cfg = s3_config(workdir, proxy, pg)
    init_repo(cfg, workdir)
    big_table(pg)
    proxy.plan([
        {"method": "HEAD", "nth": 2, "action": "500"},
        {"method": "PUT", "path": "partNumber=1&", "action": "reset"},
        {"method": "PUT", "path": "partNumber=2&", "action": "close"},
        {"method": "PUT", "path": "partNumber=2&", "action": "slowdown", "times": 2},
        {"method": "POST", "path": "?uploads", "action": "slowdown"},
        {"method": "PUT", "path": "manifest.json", "action": "delay", "ms": 1500},
        {"method": "POST", "path": "uploadId=", "action": "complete-error"},
    ])
    proc = pgdrill("backup", "--json", cfg=cfg)
    assert proc.returncode == 0, describe(proc) + "\n" + "\n".join(proxy.faults())
    actions = {line.split()[1] for line in proxy.faults()}
    assert actions >= {"500", "reset", "close", "slowdown", "delay", "complete-error"}, actions
    assert "retrying" in proc.stderr
    assert len(committed(s3)) == 1
    proxy.plan([])
    proc = pgdrill("verify", cfg=cfg)
    assert proc.returncode == 0, describe(proc)


@pytest.mark.parametrize("rule", [
    {"method": "PUT", "path": "manifest.json", "action": "500", "times": -1},
    {"method": "POST", "path": "uploadId=", "action": "complete-error", "times": -1},
    {"method": "PUT", "path": "partNumber=2&", "action": "reset", "times": -1},
])
def test_backup_fails_cleanly_under_a_lasting_fault(pg, proxy, s3, workdir, rule):
    cfg = s3_config(workdir, proxy, pg)
    init_repo(cfg, workdir)
    big_table(pg)
    proxy.plan([rule])
    proc = pgdrill("backup", cfg=cfg, timeout=400)
    assert proc.returncode == 1, describe(proc)
    assert proxy.faults(), "the fault never fired"
    assert committed(s3) == []
    proxy.plan([])
    proc = pgdrill("list", "--json", cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    assert all(b["state"] != "complete" for b in json.loads(proc.stdout)), proc.stdout


def segment_copy(pg, workdir, index=0, other_than=None):
    """A copy of a finished WAL segment; other_than: not this one (a checkpoint
    may have recycled all but one, so switch until there is another)."""
    for _ in range(5):
        pg.psql("SELECT pg_switch_wal()")
        # A switch with nothing written since the last one makes no new segment.
        pg.psql("CREATE TABLE IF NOT EXISTS w (x int); INSERT INTO w VALUES (1); "
                "SELECT pg_switch_wal()")
        current = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        names = sorted(n for n in os.listdir(os.path.join(pg.data, "pg_wal"))
                       if len(n) == 24 and n < current)
        if other_than is None or names[index] != os.path.basename(other_than):
            break
    path = os.path.join(workdir, "seg", names[index])
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    chown_to_server_user(os.path.dirname(path))
    shutil.copyfile(os.path.join(pg.data, "pg_wal", names[index]), path)
    chown_to_server_user(path)
    return path


def wal_objects(s3, name):
    return [o for o in s3.objects(f"{PREFIX}/{CLUSTER}/wal/") if name in o]


def test_archive_push_only_succeeds_when_stored(pg, proxy, s3, workdir):
    cfg = s3_config(workdir, proxy, pg)
    init_repo(cfg, workdir)
    seg = segment_copy(pg, workdir)
    name = os.path.basename(seg)

    # s3rver killed: exit 1, nothing stored.
    port = s3.port
    s3.signal(signal.SIGKILL)
    s3.proc.wait(10)
    proc = pgdrill("archive-push", seg, cfg=cfg, timeout=400)
    assert proc.returncode == 1, describe(proc)
    s3.stop()
    s3.start(port=port)
    assert wal_objects(s3, name) == []

    # s3rver stopped for 3 seconds: the push waits and then succeeds.
    s3.signal(signal.SIGSTOP)
    timer = threading.Timer(3.0, lambda: s3.signal(signal.SIGCONT))
    timer.start()
    t0 = time.monotonic()
    proc = pgdrill("archive-push", seg, cfg=cfg)
    timer.join()
    assert proc.returncode == 0, describe(proc)
    assert time.monotonic() - t0 >= 2.5
    assert len(wal_objects(s3, name)) == 1

    # A hung connection is timed out and the push retried.
    seg2 = segment_copy(pg, workdir, index=-1, other_than=seg)
    assert seg2 != seg
    proxy.plan([{"method": "PUT", "action": "hang"}])
    proc = pgdrill("archive-push", seg2, cfg=cfg, timeout=400)
    assert [f for f in proxy.faults() if f.startswith("FAULT hang")], proxy.faults()
    assert proc.returncode == 0, describe(proc)
    assert len(wal_objects(s3, os.path.basename(seg2))) == 1


def test_reads_resume_or_refuse_corrupt_data(pg, proxy, s3, workdir):
    cfg = s3_config(workdir, proxy, pg)
    init_repo(cfg, workdir)
    seg = segment_copy(pg, workdir)
    name = os.path.basename(seg)
    proc = pgdrill("archive-push", seg, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    proc = pgdrill("backup", cfg=cfg)
    assert proc.returncode == 0, describe(proc)

    # A body cut in half: the read resumes with a Range; the file is whole.
    out = os.path.join(workdir, "got1")
    proxy.plan([{"method": "GET", "path": "/wal/", "action": "truncate"}])
    proc = pgdrill("archive-get", name, out, cfg=cfg)
    assert [f for f in proxy.faults() if f.startswith("FAULT truncate")], proxy.faults()
    assert proc.returncode == 0, describe(proc)
    with open(out, "rb") as a, open(seg, "rb") as b:
        assert a.read() == b.read()

    # A flipped byte: archive-get fails and writes no file.
    out = os.path.join(workdir, "got2")
    proxy.plan([{"method": "GET", "path": "/wal/", "action": "flip"}])
    proc = pgdrill("archive-get", name, out, cfg=cfg)
    assert [f for f in proxy.faults() if f.startswith("FAULT flip")], proxy.faults()
    assert proc.returncode != 0, describe(proc)
    assert not os.path.exists(out)

    # ... and restore fails, leaving no data directory that could be started.
    target = os.path.join(workdir, "restored")
    proxy.plan([{"method": "GET", "path": "base.tar", "action": "flip", "times": -1}])
    proc = pgdrill("restore", "--target-dir", target, cfg=cfg)
    assert [f for f in proxy.faults() if "base.tar" in f], proxy.faults()
    assert proc.returncode != 0, describe(proc)
    assert not os.path.exists(os.path.join(target, "PG_VERSION")) or \
        not os.path.exists(os.path.join(target, "global", "pg_control")), os.listdir(target)
