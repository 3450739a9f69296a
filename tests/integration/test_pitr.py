"""Point-in-time recovery through the real binary: PostgreSQL 15 archives its
WAL with `pgdrill archive-push %p`, `pgdrill restore --target-...` writes the
restore_command (`archive-get %f %p`) and the target, and the restored server
recovers to exactly that point: to a time (a table dropped after it is back),
to the end of the backup (`--target immediate`: a table made after the backup
is not there), and across a timeline switch (a promoted restore archives its
.history file and timeline-2 WAL into the same repository; a later restore
follows them). archive-push stores a segment once: the same content again is
success, other content under the same name is refused and the stored object
stays; a kill -9 in the middle of a push leaves no object, and the next push
stores it whole. A segment missing in the middle of the archive, and bad
targets (unparsable, before the oldest backup, beyond the archive, two at
once), are refused before anything is written.

Who runs pgdrill. PostgreSQL runs archive_command and restore_command as the
server user (`pgdrill-test` when the tests run as root, as in CI). So every
pgdrill command here runs as that user too, from a copy of the binary it can
execute (`server_binary()`: CI clones into a mktemp -d directory, mode 0700,
that it cannot reach), via `run_pgdrill_as_server`:
- the repository is written by archive_command and by init/backup/archive-push
  from the test; pgdrill creates directories 0700 and files 0600, so one
  owner for everything is the only arrangement in which both can write
  (chown'ing the tree after each root-run command would race the archiver);
- the restore_command that `restore` writes names the binary that ran the
  restore (/proc/self/exe), so it must be the copy the restored server can
  run;
- the config and key file are the server user's (the workdir is, init
  creates the key as that user, write_config(owner="server")), and restored
  directories are the server user's already.
The test itself (root) only reads the repository, deletes an object from it
(the missing-segment case) and kills a push.

The missing segment is checked through `restore`, `--dry-run`, `verify` and
`list --json`."""

import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import time

import pytest

from harness import (KEEP_TMP, SESSION, ExistingPostgres, HarnessError, Postgres,
                     chown_to_server_user, chown_tree_to_server_user, describe, error_lines,
                     run_pgdrill_as_server, server_binary, server_pgdrill_env, server_user_kwargs,
                     tail, wait_for, write_config)
from harness import pg, pg_factory, workdir  # noqa: F401  (fixtures)

CLUSTER = "main"
SEG_SIZE = 16 * 1024 * 1024
# The server's clock, in a form pgdrill and PostgreSQL both parse.
NOW_UTC = "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
T_ROWS = "SELECT count(*), sum(g) FROM t"


# ---------------------------------------------------------------- helpers

def pgdrill(*args, cfg, **kwargs):
    return run_pgdrill_as_server(*args, config=cfg, **kwargs)


def config(workdir, server=None):
    keys = {"repo": os.path.join(workdir, "repo"), "key-file": os.path.join(workdir, "main.key")}
    if server is not None:
        keys.update(server.config_lines())
    return write_config({CLUSTER: keys}, directory=workdir, owner="server")


def init_repo(cfg, workdir):
    proc = pgdrill("init", "--generate-key-file", os.path.join(workdir, "main.key"), cfg=cfg)
    assert proc.returncode == 0, describe(proc)


def backup(cfg):
    proc = pgdrill("backup", "--json", cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    return json.loads(proc.stdout)


def archive_command(cfg):
    return f"{shlex.quote(server_binary())} --config {shlex.quote(cfg)} archive-push %p"


def archiving_settings(cfg):
    return {"wal_level": "replica", "archive_mode": "on", "archive_command": archive_command(cfg)}


def wal_object(workdir, name):
    """Where the posix repository keeps an archived WAL file."""
    wal = os.path.join(workdir, "repo", CLUSTER, "wal")
    if name.endswith(".history"):
        return os.path.join(wal, name)
    return os.path.join(wal, name[:16], name)


def server_time(server):
    return server.psql(NOW_UTC)


def switch_wal(server):
    """Ends the current segment; returns its name (the file to be archived)."""
    return server.psql("SELECT pg_walfile_name(pg_switch_wal())")


def wait_archived(server, workdir, *names, timeout=60):
    """Waits until each WAL file is an object in the repository."""
    def done():
        return all(os.path.exists(wal_object(workdir, n)) for n in names)

    try:
        wait_for(done, timeout, f"{', '.join(names)} to be archived", interval=0.05)
    except HarnessError as e:
        stats = server.psql("SELECT * FROM pg_stat_archiver", check=False)
        raise AssertionError(f"{e}\npg_stat_archiver: {getattr(stats, 'stdout', stats)}\n"
                             f"log:\n{tail(server.log_path)}") from None


def restore(cfg, target, *args):
    proc = pgdrill("restore", "--target-dir", target, *args, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    return proc


def start_restored(target, name="restored", **settings):
    """Starts a restored directory on its own socket and port (archiving off
    unless settings say otherwise) and waits for recovery to end."""
    chown_tree_to_server_user(target)
    server = ExistingPostgres(target, name=name,
                              settings={"archive_mode": "off", **settings}).init()
    def promoted():
        if not os.path.exists(os.path.join(target, "postmaster.pid")):
            raise HarnessError("the restored server stopped during recovery")
        return server.psql("SELECT pg_is_in_recovery()", check=False).stdout.strip() == "f"

    try:
        server.start()
        wait_for(promoted, 120, "recovery to end", interval=0.2)
    except HarnessError as e:
        log = tail(server.log_path)
        server.destroy()
        raise AssertionError(f"{e}\nlog:\n{log}") from None
    return server


def timeline(server):
    return int(server.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)


def table_exists(server, name):
    return server.psql(f"SELECT to_regclass('{name}') IS NOT NULL") == "t"


def one_error(proc, code, *needles):
    assert proc.returncode == code, describe(proc)
    errors = error_lines(proc)
    assert len(errors) == 1, describe(proc)
    for n in needles:
        assert n in errors[0], describe(proc)
    return errors[0]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def recovery_settings(target):
    """The settings pgdrill appended to postgresql.auto.conf (last wins)."""
    out = {}
    for line in read(os.path.join(target, "postgresql.auto.conf")).decode().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            value = value.strip()
            if value.startswith("'") and value.endswith("'"):
                value = value[1:-1].replace("''", "'")
            out[key.strip()] = value
    return out


def wal_segment_copy(server, workdir, sub):
    """A full 16 MiB segment of server's, copied into workdir/sub/ (its own
    name, readable by the server user); returns the copy's path."""
    server.psql("SELECT pg_switch_wal()")  # at least one segment is complete
    current = server.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    names = sorted(n for n in os.listdir(os.path.join(server.data, "pg_wal"))
                   if len(n) == 24 and n < current)
    assert names, os.listdir(os.path.join(server.data, "pg_wal"))
    directory = os.path.join(workdir, sub)
    os.makedirs(directory, 0o755, exist_ok=True)
    chown_to_server_user(directory)
    path = os.path.join(directory, names[0])
    shutil.copyfile(os.path.join(server.data, "pg_wal", names[0]), path)
    assert os.path.getsize(path) == SEG_SIZE
    chown_to_server_user(path)
    return path


# ---------------------------------------------------------------- a history to recover

@pytest.fixture(scope="module")
def history():
    """One archiving cluster and its repository: a backup, then table t
    (1000 rows) made, time T1 noted, t dropped, the WAL archived. Read only
    for the tests, except that test_timeline_switch_is_followed_from_the_archive
    archives a second timeline into the repository."""
    workdir = SESSION.mkdir("pitr")
    src = Postgres(name="src").init()
    try:
        cfg = config(workdir, src)
        src.set(**archiving_settings(cfg))
        src.start()
        init_repo(cfg, workdir)
        manifest = backup(cfg)
        src.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        t1 = server_time(src)
        time.sleep(1)
        src.psql("DROP TABLE t")
        seg = switch_wal(src)
        wait_archived(src, workdir, seg)
        assert not table_exists(src, "t")
        yield {"workdir": workdir, "cfg": cfg, "src": src, "backup": manifest["id"], "t1": t1,
               "manifest": manifest, "last_segment": seg}
    finally:
        src.destroy()
        if not KEEP_TMP:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- recovery to a target

def test_recover_to_time_and_to_end_of_backup(history):
    workdir, cfg, t1 = history["workdir"], history["cfg"], history["t1"]

    target = os.path.join(workdir, "to-t1")
    restore(cfg, target, "--target-time", t1, "--target-action", "promote")
    settings = recovery_settings(target)
    # This binary (the copy that ran the restore), the same config and cluster.
    words = shlex.split(settings["restore_command"])
    assert words[0] == server_binary(), settings
    assert os.path.realpath(words[words.index("--config") + 1]) == os.path.realpath(cfg), settings
    assert words[words.index("--cluster") + 1] == CLUSTER, settings
    assert words[-3:] == ["archive-get", "%f", "%p"], settings
    assert settings["recovery_target_action"] == "promote", settings
    assert settings["recovery_target_time"].startswith(t1[:19]), (settings, t1)
    assert os.path.exists(os.path.join(target, "recovery.signal"))
    restored = start_restored(target)
    try:
        # Created after the backup, dropped after T1: replayed from the archive.
        assert restored.psql(T_ROWS) == "1000|500500"
        assert timeline(restored) == 2
    finally:
        restored.destroy()

    target = os.path.join(workdir, "immediate")
    restore(cfg, target, "--target", "immediate", "--target-action", "promote")
    settings = recovery_settings(target)
    assert settings["recovery_target"] == "immediate", settings
    assert "recovery_target_time" not in settings, settings
    restored = start_restored(target)
    try:
        assert not table_exists(restored, "t")
        assert restored.psql("SELECT 1") == "1"
    finally:
        restored.destroy()


def test_timeline_switch_is_followed_from_the_archive(history):
    """A restore promoted at T1 with archiving on (same archive_command, same
    repository) starts timeline 2 and archives 00000002.history and its
    segments; work done there is recovered by a later restore to T2 (default
    --target-timeline latest), which must follow the history file."""
    workdir, cfg = history["workdir"], history["cfg"]
    target = os.path.join(workdir, "branch")
    restore(cfg, target, "--target-time", history["t1"], "--target-action", "promote")
    branch = start_restored(target, name="branch", archive_mode="on",
                            archive_command=archive_command(cfg))
    try:
        assert timeline(branch) == 2
        branch.psql("CREATE TABLE t2 AS SELECT g FROM generate_series(1, 500) g")
        t2 = server_time(branch)
        time.sleep(1)
        branch.psql("CREATE TABLE t3 AS SELECT 1 AS one")  # after T2: must not come back
        seg = switch_wal(branch)
        assert seg.startswith("00000002"), seg
        wait_archived(branch, workdir, "00000002.history", seg)
    finally:
        branch.destroy()

    target = os.path.join(workdir, "to-t2")
    restore(cfg, target, "--target-time", t2, "--target-action", "promote")
    assert recovery_settings(target).get("recovery_target_timeline", "latest") == "latest"
    restored = start_restored(target, name="to-t2")
    try:
        assert restored.psql("SELECT count(*), sum(g) FROM t2") == "500|125250"
        assert restored.psql(T_ROWS) == "1000|500500"  # timeline 1 up to T1
        assert not table_exists(restored, "t3")
        assert timeline(restored) == 3
    finally:
        restored.destroy()


# ---------------------------------------------------------------- archive-push

def test_same_segment_pushed_twice(pg, workdir):
    pg.psql("CREATE TABLE w AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
    cfg = config(workdir, pg)
    init_repo(cfg, workdir)
    original = wal_segment_copy(pg, workdir, "wal-a")
    name = os.path.basename(original)
    obj = wal_object(workdir, name)

    proc = pgdrill("archive-push", original, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    stored = read(obj)
    proc = pgdrill("archive-push", original, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    assert read(obj) == stored

    # Same name, one byte changed in the middle (not in the page header,
    # which names the cluster), from another directory.
    other_dir = os.path.join(workdir, "wal-b")
    os.mkdir(other_dir, 0o755)
    chown_to_server_user(other_dir)
    changed = os.path.join(other_dir, name)
    data = bytearray(read(original))
    data[SEG_SIZE // 2 + 100] ^= 0xFF
    with open(changed, "wb") as f:
        f.write(data)
    chown_to_server_user(changed)
    one_error(pgdrill("archive-push", changed, cfg=cfg), 1, name, "different content")
    assert read(obj) == stored

    fetched = os.path.join(workdir, "fetched")
    proc = pgdrill("archive-get", name, fetched, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    assert read(fetched) == read(original)


def test_kill_during_archive_push(pg, workdir):
    pg.pgbench("-i", "-q", "-s", "2")
    cfg = config(workdir, pg)
    init_repo(cfg, workdir)
    segment = wal_segment_copy(pg, workdir, "wal")
    name = os.path.basename(segment)
    obj = wal_object(workdir, name)
    temp_pattern = os.path.join(os.path.dirname(obj), f".{name}.tmp.*")

    def growing_temp_file():
        return [p for p in glob.glob(temp_pattern) if os.path.exists(p) and os.path.getsize(p) > 0]

    # Slow compression keeps the push streaming long enough to be killed.
    cmd = [server_binary(), "--config", cfg, "archive-push", "--compression-level", "19",
           "--compression-threads", "1", segment]
    killed = False
    for attempt in range(3):
        proc = subprocess.Popen(cmd, env=server_pgdrill_env(home=workdir), cwd=workdir,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **server_user_kwargs())
        try:
            wait_for(lambda: growing_temp_file() or proc.poll() is not None, 60,
                     "archive-push to write a temporary file", interval=0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed = True
        finally:
            proc.kill()
            out, err = proc.communicate()
        if killed and proc.returncode == -signal.SIGKILL:
            break
        # It finished first: take the object away and try again.
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
        os.remove(obj)
        killed = False
    assert killed, "archive-push ended each time before it could be killed"

    # No partial object: nothing under the final name (archive-get says it
    # is not archived), or, had the kill come after the commit, all of it.
    fetched = os.path.join(workdir, "fetched")
    proc = pgdrill("archive-get", name, fetched, cfg=cfg)
    if os.path.exists(obj):
        assert proc.returncode == 0, describe(proc)
        assert read(fetched) == read(segment)
        os.remove(fetched)
    else:
        assert proc.returncode == 1, describe(proc)
        assert not os.path.exists(fetched)

    # PostgreSQL retries the segment: the next push stores it whole.
    proc = pgdrill("archive-push", segment, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    proc = pgdrill("archive-get", name, fetched, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    assert read(fetched) == read(segment)


# ---------------------------------------------------------------- a gap in the archive

def test_missing_segment_in_the_middle(pg_factory, workdir):
    src = pg_factory(start=False)
    cfg = config(workdir, src)
    src.set(**archiving_settings(cfg))
    src.start()
    init_repo(cfg, workdir)
    bid = backup(cfg)["id"]
    segments = []
    for i in range(4):
        src.psql(f"CREATE TABLE t{i} AS SELECT g FROM generate_series(1, 1000) g")
        if i == 3:
            after = server_time(src)
            time.sleep(1)
            src.psql("CREATE TABLE last AS SELECT 1 AS one")
        segments.append(switch_wal(src))
    wait_archived(src, workdir, *segments)
    assert len(set(segments)) == 4, segments
    gap = segments[1]

    # The intact archive: all present.
    proc = pgdrill("restore", "--target-dir", os.path.join(workdir, "dry"), "--dry-run",
                   "--target-time", after, cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    assert bid in proc.stdout and "all present" in proc.stdout, describe(proc)

    os.remove(wal_object(workdir, gap))

    target = os.path.join(workdir, "target")
    proc = pgdrill("restore", "--target-dir", target, "--dry-run", "--target-time", after,
                   cfg=cfg)
    assert proc.returncode != 0, describe(proc)
    assert any(gap in line for line in error_lines(proc)), describe(proc)
    assert not os.path.exists(target)

    proc = pgdrill("restore", "--target-dir", target, "--target-time", after, cfg=cfg)
    one_error(proc, 3, gap, "missing")
    assert not os.path.exists(target)

    # Without a target the dry run still reports the gap, and exits 3.
    proc = pgdrill("restore", "--target-dir", target, "--dry-run", cfg=cfg)
    assert f"MISSING: {gap}" in proc.stdout, describe(proc)
    assert proc.returncode == 3, describe(proc)
    assert not os.path.exists(target)

    # verify reports the gap (exit 3), and list says until where the backup recovers.
    proc = pgdrill("verify", cfg=cfg)
    assert proc.returncode == 3, describe(proc)
    assert any(gap in line and "missing from the archive" in line for line in error_lines(proc)), \
        describe(proc)
    proc = pgdrill("list", "--json", cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    assert [b["wal_gap"] for b in json.loads(proc.stdout)] == [gap], proc.stdout


# ---------------------------------------------------------------- bad targets

def test_bad_targets_write_nothing(history):
    workdir, cfg, bid = history["workdir"], history["cfg"], history["backup"]
    target = os.path.join(workdir, "never")
    empty = os.path.join(workdir, "empty")
    os.mkdir(empty, 0o700)
    chown_to_server_user(empty)

    def refused(*args, needles=()):
        for dest in (target, empty):
            proc = pgdrill("restore", "--target-dir", dest, *args, cfg=cfg)
            line = one_error(proc, 2, *needles)
            assert not os.path.exists(target), os.listdir(target)
            assert os.listdir(empty) == [], os.listdir(empty)
        return line

    refused("--target-time", "yesterday", needles=("yesterday",))
    refused("--target-time", "2026-13-01 00:00:00+00")
    refused("--target-time", "2000-01-01 00:00:00+00", needles=(bid, "before"))
    line = refused("--target-time", "2100-01-01 00:00:00+00", needles=("beyond the end",))
    # How far it reaches: the newest archived WAL file (the timeline-switch
    # test may have archived a later one than history["last_segment"]).
    newest = sorted(os.path.basename(p) for p in glob.glob(
        os.path.join(workdir, "repo", CLUSTER, "wal", "*", "*")) if len(os.path.basename(p)) == 24)
    assert newest and newest[-1] in line, (line, newest)
    refused("--target-lsn", "FF/0", needles=("beyond the end",))
    refused("--target-lsn", "zz", needles=("zz",))
    refused("--target-xid", "abc", needles=("abc",))
    refused("--target-time", history["t1"], "--target-xid", "1000", needles=("at most one",))
    refused("--target", "immediate", "--target-name", "here", needles=("at most one",))
    refused("--target", "later")
    refused("--target-time", history["t1"], "--target-action", "explode")


# ---------------------------------------------------------------- check

def test_check_confirms_wal_reaches_the_repository(history):
    src, cfg = history["src"], history["cfg"]
    proc = pgdrill("check", "--json", cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    doc = json.loads(proc.stdout)
    arch = doc["archiving"]
    assert arch["ok"] is True and arch["enabled"] is True, proc.stdout
    # The segment check switched to is really in the repository.
    assert os.path.exists(wal_object(history["workdir"], arch["segment"])), proc.stdout

    # An archive_command that does not call pgdrill: exit 2, the line to set.
    saved = src.psql("SHOW archive_command")
    src.psql("ALTER SYSTEM SET archive_command = '/bin/true'; SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)
        proc = pgdrill("check", cfg=cfg)
        one_error(proc, 2, "does not call pgdrill archive-push")
    finally:
        src.psql("ALTER SYSTEM RESET archive_command; SELECT pg_reload_conf()")
        time.sleep(0.5)
    assert src.psql("SHOW archive_command") == saved
