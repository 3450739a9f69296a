"""`pgdrill backup`, `list`, `verify` and `restore` through the real binary
against a real PostgreSQL 15 and a local repository: a backup with a second
tablespace restores to a cluster that pg_verifybackup accepts and that holds
the source's data; a backup taken under load restores consistent; a flipped
byte, a kill -9 in the middle of a backup, a full file system and the usual
mistakes (wrong key, unknown ID, non-empty target, missing repository, loose
key file) each fail with one error line and the documented exit code, and
leave nothing behind that looks valid."""

import contextlib
import glob
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time

import pytest

from harness import (IS_ROOT, PG_BIN, ExistingPostgres, Postgres, chown_to_server_user,
                     chown_tree_to_server_user, describe, error_lines, pgdrill_bin, pgdrill_env,
                     run_as_server, run_pgdrill, wait_for, write_config)
from harness import pg, workdir  # noqa: F401  (fixtures)

LIST_FIELDS = {"id", "type", "state", "start_time", "stop_time", "start_lsn", "stop_lsn",
               "timeline", "size", "stored_size", "last_drill"}
# pgbench's invariant: every transaction adds the same delta to one account,
# teller and branch and logs it in history, so the four sums agree in any
# transaction-consistent copy.
PGBENCH_SUMS = ("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                "(SELECT sum(bbalance) FROM pgbench_branches), "
                "(SELECT sum(tbalance) FROM pgbench_tellers), "
                "(SELECT coalesce(sum(delta), 0) FROM pgbench_history)")
ACCOUNTS = "SELECT count(*), sum(abalance) FROM pgbench_accounts"


def tools_dir():
    if os.environ.get("PGDRILL_TOOLS_DIR"):
        return os.environ["PGDRILL_TOOLS_DIR"]
    return os.path.dirname(os.path.abspath(pgdrill_bin()))


# ---------------------------------------------------------------- helpers

def config(workdir, pg=None, name="pgdrill.conf", **keys):
    lines = {"repo": os.path.join(workdir, "repo"), "key-file": os.path.join(workdir, "main.key")}
    if pg is not None:
        lines.update(pg.config_lines())
    lines.update({k.replace("_", "-"): v for k, v in keys.items()})
    lines = {k: v for k, v in lines.items() if v is not None}
    return write_config({"main": lines}, directory=workdir, name=name)


def init_repo(cfg, workdir):
    proc = run_pgdrill("init", "--generate-key-file", os.path.join(workdir, "main.key"),
                       config=cfg)
    assert proc.returncode == 0, describe(proc)


def backup(cfg, *args):
    """A committed backup's manifest (from --json)."""
    proc = run_pgdrill("backup", "--json", *args, config=cfg)
    assert proc.returncode == 0, describe(proc)
    manifest = json.loads(proc.stdout)
    assert manifest["id"], describe(proc)
    return manifest


def listing(cfg):
    proc = run_pgdrill("list", "--json", config=cfg)
    assert proc.returncode == 0, describe(proc)
    return {b["id"]: b for b in json.loads(proc.stdout)}


def one_error(proc, code, *needles):
    assert proc.returncode == code, describe(proc)
    errors = error_lines(proc)
    assert len(errors) == 1, describe(proc)
    for n in needles:
        assert n in errors[0], describe(proc)
    return errors[0]


def backup_dir(workdir, backup_id, repo="repo"):
    return os.path.join(workdir, repo, "main", "backups", backup_id)


def new_dir(workdir, name):
    """An empty directory owned by the server user (a restore target or a
    tablespace location)."""
    path = os.path.join(workdir, name)
    os.mkdir(path, 0o700)
    return chown_to_server_user(path)


def pg_verifybackup(target):
    """pg_verifybackup on a restored directory, as the server user."""
    return run_as_server([os.path.join(PG_BIN, "pg_verifybackup"), target],
                         cwd=os.path.dirname(target), check=False, timeout=300)


def start_restored(target, *tablespace_dirs):
    """Gives the restored files to the server user and starts them."""
    chown_tree_to_server_user(target, *tablespace_dirs)
    return ExistingPostgres(target).init().start()


def looks_startable(target):
    return os.path.exists(os.path.join(target, "global", "pg_control"))


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def tree(path):
    """Everything under path with its size, for "left untouched" checks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


# ---------------------------------------------------------------- shared clusters

@pytest.fixture(scope="module")
def small_pg():
    """pgbench scale 1, read only for the tests that share it."""
    instance = Postgres(name="small").init().start()
    instance.pgbench("-i", "-q", "-s", "1")
    yield instance
    instance.destroy()


@pytest.fixture(scope="module")
def pg5():
    """pgbench scale 5 (about 75 MiB of data), read only for the tests that share it."""
    instance = Postgres(name="pg5").init().start()
    instance.pgbench("-i", "-q", "-s", "5")
    yield instance
    instance.destroy()


@pytest.fixture
def backed_up(small_pg, workdir):
    """(config, backup id) of a fresh repository with one backup of small_pg."""
    cfg = config(workdir, small_pg)
    init_repo(cfg, workdir)
    return cfg, backup(cfg)["id"]


# ---------------------------------------------------------------- round trips

def test_backup_with_tablespace_restores_to_a_verified_cluster(pg, workdir):
    pg.pgbench("-i", "-q", "-s", "10")
    ts_dir = new_dir(workdir, "ts-source")
    pg.psql(f"CREATE TABLESPACE extra LOCATION '{ts_dir}';"
            "CREATE TABLE far (i int, t text) TABLESPACE extra;"
            "INSERT INTO far SELECT g, md5(g::text) FROM generate_series(1, 5000) g;")
    oid = pg.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'")
    accounts = pg.psql(ACCOUNTS)
    far = pg.psql("SELECT count(*), sum(i), md5(string_agg(t, ',' ORDER BY i)) FROM far")
    assert accounts == "1000000|0" and far.startswith("5000|12502500|")

    cfg = config(workdir, pg)
    init_repo(cfg, workdir)
    idx_scans = "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = '{}'"
    pg.psql("SELECT pg_stat_force_next_flush()")
    scans_before = int(pg.psql(idx_scans.format("pgbench_accounts_pkey")))
    manifest = backup(cfg)
    bid = manifest["id"]
    names = sorted(o["name"] for o in manifest["objects"])
    assert names == sorted(["base.tar", f"{oid}.tar", "backup_manifest"]), manifest
    # The drill's row counts, exact (nobody wrote); pgbench vacuumed its
    # tables, so pgbench_accounts was counted from its primary key, and far
    # (never vacuumed: no visibility map) by reading the table.
    counts = {c["table"]: (c["rows"], c["changes"]) for c in manifest["row_counts"]}
    assert counts["public.pgbench_accounts"] == (1000000, 0), manifest["row_counts"]
    assert counts["public.far"] == (5000, 0), manifest["row_counts"]
    wait_for(lambda: int(pg.psql(idx_scans.format("pgbench_accounts_pkey"))) > scans_before, 10,
             "the count's index-only scan in the statistics")

    text = run_pgdrill("list", config=cfg)
    assert text.returncode == 0, describe(text)
    row = [line for line in text.stdout.splitlines() if line.startswith(bid)]
    assert len(row) == 1 and " complete " in row[0], describe(text)
    entry = listing(cfg)[bid]
    assert LIST_FIELDS <= set(entry), entry
    assert (entry["type"], entry["state"], entry["timeline"], entry["last_drill"]) == (
        "physical", "complete", 1, None), entry
    assert 0 < entry["stored_size"] < entry["size"], entry
    assert entry["start_lsn"] == manifest["start_lsn"] and entry["stop_lsn"] == manifest["stop_lsn"]
    assert entry["start_time"] <= entry["stop_time"], entry

    proc = run_pgdrill("verify", "--backup", bid, config=cfg)
    assert proc.returncode == 0, describe(proc)

    target = os.path.join(workdir, "restored")
    ts_new = os.path.join(workdir, "ts-restored")
    proc = run_pgdrill("restore", "--target-dir", target, "--backup", bid,
                       "--tablespace-map", f"{oid}={ts_new}", config=cfg)
    assert proc.returncode == 0, describe(proc)
    assert os.path.realpath(os.path.join(target, "pg_tblspc", oid)) == os.path.realpath(ts_new)
    assert glob.glob(os.path.join(ts_new, "PG_15_*")), os.listdir(ts_new)
    assert os.listdir(ts_dir), "the source tablespace must not be touched"

    chown_tree_to_server_user(target, ts_new)
    # Before the server starts (startup rewrites backup_label, tablespace_map
    # and pg_wal); asserted after the data checks so that a failure here does
    # not hide theirs.
    verified = pg_verifybackup(target)

    restored = start_restored(target, ts_new)
    try:
        assert restored.psql(ACCOUNTS) == accounts
        assert restored.psql(
            "SELECT count(*), sum(i), md5(string_agg(t, ',' ORDER BY i)) FROM far") == far
        assert os.path.realpath(restored.psql(
            f"SELECT pg_tablespace_location({oid})")) == os.path.realpath(ts_new)
    finally:
        restored.destroy()
    assert verified.returncode == 0, f"pg_verifybackup:\n{verified.stdout}{verified.stderr}"


def test_backup_under_load_restores_consistent(pg, workdir):
    pg.pgbench("-i", "-q", "-s", "2")
    cfg = config(workdir, pg)
    init_repo(cfg, workdir)
    load = {}

    def run_load():
        try:
            load["proc"] = pg.pgbench("-T", "15", "-c", "2", timeout=120)
        except Exception as e:  # reported by the main thread
            load["error"] = e

    writer = threading.Thread(target=run_load)
    writer.start()
    try:
        wait_for(lambda: int(pg.psql("SELECT count(*) FROM pgbench_history")) > 100, 30,
                 "pgbench to commit transactions")
        before = int(pg.psql("SELECT count(*) FROM pgbench_history"))
        bid = backup(cfg)["id"]
        assert writer.is_alive(), "pgbench ended before the backup: it was not taken under load"
        proc = run_pgdrill("verify", "--backup", bid, config=cfg)
        assert proc.returncode == 0, describe(proc)

        target = os.path.join(workdir, "restored")
        proc = run_pgdrill("restore", "--target-dir", target, config=cfg)
        assert proc.returncode == 0, describe(proc)
        chown_tree_to_server_user(target)
        verified = pg_verifybackup(target)
        assert verified.returncode == 0, f"{verified.stdout}{verified.stderr}"

        restored = start_restored(target)
        try:
            sums = restored.psql(PGBENCH_SUMS).split("|")
            assert len(set(sums)) == 1, f"pgbench sums disagree: {sums}"
            history = int(restored.psql("SELECT count(*) FROM pgbench_history"))
            assert history >= before, (history, before)
            assert restored.psql("SELECT count(*) FROM pgbench_accounts") == "200000"
            restored.psql(
                "CREATE EXTENSION amcheck;"
                "SELECT bt_index_check(c.oid, true) FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_am a ON a.oid = c.relam AND a.amname = 'btree'"
                " WHERE c.relname LIKE 'pgbench_%';"
                "SELECT bt_index_check('pg_class_oid_index', true);")
        finally:
            restored.destroy()
    finally:
        writer.join()
    assert "error" not in load, load.get("error")
    # The source went on writing after the backup: the restore is a copy of
    # the past, not of the end of the load.
    assert int(pg.psql("SELECT count(*) FROM pgbench_history")) > history


# ---------------------------------------------------------------- damage

def test_flipped_byte_in_stored_object(backed_up, workdir):
    cfg, bid = backed_up
    proc = run_pgdrill("verify", "--backup", bid, config=cfg)
    assert proc.returncode == 0, describe(proc)

    obj = os.path.join(backup_dir(workdir, bid), "base.tar")
    flip_byte(obj, os.path.getsize(obj) // 2)
    name = f"backups/{bid}/base.tar"

    proc = run_pgdrill("verify", "--backup", bid, config=cfg)
    assert proc.returncode == 3, describe(proc)
    damaged = [line for line in error_lines(proc) if name in line and "corrupt" in line]
    assert len(damaged) == 1, describe(proc)
    proc = run_pgdrill("verify", "--backup", bid, "--json", config=cfg)
    assert proc.returncode == 3, describe(proc)
    report = json.loads(proc.stdout)
    assert [(r["id"], r["result"]) for r in report] == [(bid, "failed")], proc.stdout
    assert report[0]["problems"] >= 1, proc.stdout

    # Into a new directory and into an existing empty one: a failed restore
    # leaves nothing that PostgreSQL would start.
    fresh = os.path.join(workdir, "fresh")
    empty = new_dir(workdir, "empty")
    for target in (fresh, empty):
        proc = run_pgdrill("restore", "--target-dir", target, "--backup", bid, config=cfg)
        one_error(proc, 3, name)
        assert not looks_startable(target), os.listdir(target)
        assert not os.path.exists(os.path.join(target, "backup_label"))
    assert os.path.isdir(empty)


def test_kill_during_backup_leaves_no_complete_backup(pg5, workdir):
    cfg = config(workdir, pg5)
    init_repo(cfg, workdir)
    old = backup(cfg)["id"]
    backups = os.path.dirname(backup_dir(workdir, old))

    def growing_temp_file():
        found = [p for p in glob.glob(os.path.join(backups, "*", ".*.tmp.*"))
                 if not p.startswith(os.path.join(backups, old) + "/")]
        return [(p, os.path.getsize(p)) for p in found if os.path.exists(p)]

    # Slow compression keeps the backup streaming long enough to be killed.
    proc = subprocess.Popen([pgdrill_bin(), "--config", cfg, "backup", "--compression-level",
                             "15", "--compression-threads", "1"],
                            env=pgdrill_env(), cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = wait_for(lambda: [t for t in growing_temp_file() if t[1] > 0] or
                         proc.poll() is not None, 60, "the backup to write a temporary file")
        assert proc.poll() is None, "the backup ended before it could be killed"
        path, size = first[0]
        wait_for(lambda: proc.poll() is not None or
                 (os.path.exists(path) and os.path.getsize(path) > size), 60,
                 "the temporary file to grow", interval=0.02)
        assert proc.poll() is None, "the backup ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed = os.path.basename(os.path.dirname(path))
    assert killed != old

    entries = listing(cfg)
    assert entries[old]["state"] == "complete", entries
    assert entries.get(killed, {"state": "incomplete"})["state"] == "incomplete", entries
    assert not os.path.exists(os.path.join(backups, killed, "manifest.json"))
    one_error(run_pgdrill("restore", "--target-dir", os.path.join(workdir, "t"), "--backup", killed,
                          config=cfg), 2, killed)
    assert not os.path.exists(os.path.join(workdir, "t"))

    new = backup(cfg)["id"]
    assert new not in (old, killed)
    entries = listing(cfg)
    assert (entries[old]["state"], entries[new]["state"]) == ("complete", "complete"), entries
    for bid in (old, new):
        proc = run_pgdrill("verify", "--backup", bid, config=cfg)
        assert proc.returncode == 0, describe(proc)


def test_backup_right_after_a_killed_one_in_the_same_second(pg, workdir):
    """A killed backup whose tablespace tar was already committed is listed
    as incomplete; a backup started at once (same clock second, so the same
    time-based ID unless pgdrill picks another) must still succeed and must
    not mix its objects into the killed one's directory."""
    ts_dir = new_dir(workdir, "ts")
    pg.psql(f"CREATE TABLESPACE extra LOCATION '{ts_dir}';"
            "CREATE TABLE far TABLESPACE extra AS SELECT generate_series(1, 1000) i;")
    cfg = config(workdir, pg)
    init_repo(cfg, workdir)
    backups = os.path.join(workdir, "repo", "main", "backups")

    time.sleep(1.02 - time.time() % 1)  # just after a second starts
    proc = subprocess.Popen([pgdrill_bin(), "--config", cfg, "backup", "--compression-level",
                             "15", "--compression-threads", "1"],
                            env=pgdrill_env(), cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The server sends the user tablespaces first, base.tar last.
        temp = wait_for(lambda: glob.glob(os.path.join(backups, "*", ".base.tar.tmp.*")) or
                        proc.poll() is not None, 30, "base.tar to start", interval=0.005)
        assert proc.poll() is None, "the backup ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    killed = os.path.basename(os.path.dirname(temp[0]))

    after = run_pgdrill("backup", "--json", config=cfg)
    entries = listing(cfg)
    assert entries.get(killed, {}).get("state") == "incomplete", entries
    assert after.returncode == 0, describe(after)
    new = json.loads(after.stdout)["id"]
    assert new != killed and entries[new]["state"] == "complete", entries
    proc = run_pgdrill("verify", "--backup", new, config=cfg)
    assert proc.returncode == 0, describe(proc)


def test_damage_inside_a_tar_is_found_by_backup_manifest(small_pg, workdir):
    """A byte changed inside a relation file, with the stored object and
    manifest.json made consistent again (an unencrypted repository can be
    rewritten by anyone who can write to it): only PostgreSQL's
    backup_manifest checksums can catch it."""
    objtool = os.path.join(tools_dir(), "pd_objtool")
    assert os.access(objtool, os.X_OK), f"{objtool} not found: build the pd_objtool target"
    cfg = config(workdir, small_pg, encryption="none", key_file=None)
    proc = run_pgdrill("init", config=cfg)
    assert proc.returncode == 0, describe(proc)
    bid = backup(cfg)["id"]
    relfile = small_pg.psql("SELECT pg_relation_filepath('pgbench_accounts')")
    bdir = backup_dir(workdir, bid)

    def tool(*args, data):
        p = subprocess.run([objtool, *args, "--cipher", "none"], input=data, capture_output=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        return p.stdout

    def read(name):
        with open(os.path.join(bdir, name), "rb") as f:
            return tool("decode", "--identity", f"backups/{bid}/{name}", data=f.read())

    def store(name, plain):
        obj = tool("encode", "--identity", f"backups/{bid}/{name}", "--compression", "zstd",
                   data=plain)
        with open(os.path.join(bdir, name), "wb") as f:
            f.write(obj)
        return obj

    tar = read("base.tar")
    manifest = json.loads(read("manifest.json"))
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        member = tf.getmember(relfile)
    assert member.isfile() and member.size > 4 * 8192, member

    def rewrite(plain):
        obj = store("base.tar", plain)
        m = json.loads(json.dumps(manifest))
        entry = [o for o in m["objects"] if o["name"] == "base.tar"][0]
        m["size"] += len(plain) - entry["size"]
        m["stored_size"] += len(obj) - entry["stored_size"]
        entry.update(size=len(plain), sha256=hashlib.sha256(plain).hexdigest(),
                     stored_size=len(obj), stored_sha256=hashlib.sha256(obj).hexdigest())
        store("manifest.json", json.dumps(m, indent=2).encode())
        return run_pgdrill("verify", "--backup", bid, config=cfg)

    # The rewriting itself is invisible: an unchanged tar re-encoded verifies.
    proc = rewrite(tar)
    assert proc.returncode == 0, describe(proc)

    damaged = bytearray(tar)
    damaged[member.offset_data + 3 * 8192 + 4000] ^= 0x01
    proc = rewrite(bytes(damaged))
    assert proc.returncode == 3, describe(proc)
    lines = [line for line in error_lines(proc)
             if f'"{relfile}"' in line and "does not match its checksum in backup_manifest" in line]
    assert len(lines) == 1, describe(proc)


# ---------------------------------------------------------------- errors

def test_wrong_key(backed_up, workdir):
    cfg, bid = backed_up
    other = os.path.join(workdir, "other.key")
    with open(other, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(other, 0o600)
    bad = config(workdir, key_file=other, name="wrong.conf")
    assert run_pgdrill("list", config=cfg).returncode == 0
    target = os.path.join(workdir, "target")
    for args in (["backup"], ["list"], ["verify", "--backup", bid],
                 ["restore", "--target-dir", target]):
        one_error(run_pgdrill(*args, config=bad), 2, "wrong key")
    assert not os.path.exists(target)
    assert list(listing(cfg)) == [bid]


@contextlib.contextmanager
def held_table(pg, seconds):
    """Table public.held (1000 rows), locked ACCESS EXCLUSIVE by another
    session for up to seconds while the block runs."""
    pg.psql("CREATE TABLE held AS SELECT g FROM generate_series(1, 1000) g")
    holder = threading.Thread(target=pg.psql, kwargs={
        "sql": f"BEGIN; LOCK TABLE held; SELECT pg_sleep({seconds}); COMMIT;", "check": False})
    holder.start()
    try:
        wait_for(lambda: pg.psql("SELECT count(*) FROM pg_locks WHERE granted AND "
                                 "mode = 'AccessExclusiveLock' AND "
                                 "relation = 'held'::regclass") == "1", 30, "the lock")
        yield
    finally:
        pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE query LIKE '%pg_sleep({seconds})%' AND pid <> pg_backend_pid()")
        holder.join(30)


def test_backup_of_another_cluster_refused(small_pg, backed_up, pg, workdir):
    """The repository keeps to the cluster of its first backup. A table
    another session holds locked neither stops the backup from starting (the
    tables to count are chosen without locks) nor holds up the refusal: the
    waiting count is cancelled (its lock_timeout is 30 s)."""
    cfg, bid = backed_up
    with held_table(pg, 120):
        other = config(workdir, pg, name="other.conf")
        started = time.monotonic()
        proc = run_pgdrill("backup", config=other, timeout=60)
        took = time.monotonic() - started
        ids = [c.psql("SELECT system_identifier FROM pg_control_system()") for c in (small_pg, pg)]
    one_error(proc, 2, *ids)
    # Not held up until the count's lock_timeout (30 s): the count was
    # cancelled, or never began.
    assert took < 25, (took, describe(proc))
    with open(pg.log_path) as f:
        log = f.read()
    if "count(*) FROM public.held" in log:
        assert "canceling statement due to user request" in log, log[-3000:]
    assert list(listing(cfg)) == [bid]
    assert os.listdir(os.path.join(workdir, "repo", "main", "backups")) == [bid]


def test_backup_waits_for_a_count_a_lock_holds_up(pg, workdir):
    """A table another session holds locked (briefly) is counted once the
    lock goes; the backup says it waits, and its rate is the data's."""
    cfg = config(workdir, pg)
    init_repo(cfg, workdir)
    with held_table(pg, 4):
        proc = run_pgdrill("--verbose", "backup", "--json", config=cfg)
    assert proc.returncode == 0, describe(proc)
    assert "waiting for the drill's row counts" in proc.stderr, describe(proc)
    assert re.search(r"complete: .* in [0-9.]+m?s, [0-9.]+ [KMG]iB/s, then [0-9.]+s for the row "
                     r"counts", proc.stderr), describe(proc)
    counts = {c["table"]: c["rows"] for c in json.loads(proc.stdout)["row_counts"]}
    assert counts["public.held"] == 1000, counts


def test_unknown_backup_id(backed_up, workdir):
    cfg, bid = backed_up
    assert run_pgdrill("verify", "--backup", bid, config=cfg).returncode == 0
    target = os.path.join(workdir, "target")
    for unknown in ("20000101T000000Z", "nonsense"):
        one_error(run_pgdrill("restore", "--target-dir", target, "--backup", unknown,
                              config=cfg), 2, unknown)
        assert not os.path.exists(target)
        one_error(run_pgdrill("verify", "--backup", unknown, config=cfg), 2, unknown)


def test_non_empty_target(backed_up, workdir):
    cfg, bid = backed_up
    empty = new_dir(workdir, "empty")
    proc = run_pgdrill("restore", "--target-dir", empty, config=cfg)
    assert proc.returncode == 0, describe(proc)
    assert looks_startable(empty)

    busy = new_dir(workdir, "busy")
    with open(os.path.join(busy, "precious"), "w") as f:
        f.write("keep me\n")
    os.mkdir(os.path.join(busy, "global"))
    before = tree(busy)
    one_error(run_pgdrill("restore", "--target-dir", busy, config=cfg), 2, busy, "not empty")
    assert tree(busy) == before
    # The directory restored above is not empty either.
    before = tree(empty)
    one_error(run_pgdrill("restore", "--target-dir", empty, config=cfg), 2, empty)
    assert tree(empty) == before


def test_missing_repository(small_pg, workdir):
    missing = os.path.join(workdir, "nowhere")
    init_repo(config(workdir), workdir)  # only for the key file
    cfg = config(workdir, small_pg, repo=missing, name="missing.conf")
    target = os.path.join(workdir, "target")
    for args in (["backup"], ["list"], ["verify"], ["restore", "--target-dir", target]):
        one_error(run_pgdrill(*args, config=cfg), 2, missing)
        assert not os.path.exists(missing)
    assert not os.path.exists(target)


def test_loose_key_file(backed_up, workdir):
    cfg, bid = backed_up
    key = os.path.join(workdir, "copy.key")
    shutil.copyfile(os.path.join(workdir, "main.key"), key)
    os.chmod(key, 0o600)
    copy = config(workdir, key_file=key, name="copy.conf")
    assert run_pgdrill("list", config=copy).returncode == 0
    os.chmod(key, 0o644)
    target = os.path.join(workdir, "target")
    for args in (["backup"], ["list"], ["verify", "--backup", bid],
                 ["restore", "--target-dir", target]):
        one_error(run_pgdrill(*args, config=copy), 2, key, "chmod 600")
    assert not os.path.exists(target)
    assert list(listing(cfg)) == [bid]


def test_full_repository(pg5, workdir):
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = os.path.join(workdir, "small-fs")
    os.mkdir(mnt, 0o700)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", mnt],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.strip()}")
    try:
        repo = os.path.join(mnt, "repo")
        cfg = config(workdir, pg5, repo=repo)
        init_repo(cfg, workdir)
        proc = run_pgdrill("backup", config=cfg)
        line = one_error(proc, 1, "full", repo)
        assert "no space left" in line, line
        assert not [b for b in listing(cfg).values() if b["state"] == "complete"]
        assert not glob.glob(os.path.join(repo, "main", "backups", "*", "manifest.json"))
        assert not glob.glob(os.path.join(repo, "main", "backups", "*", ".*.tmp.*"))
        one_error(run_pgdrill("restore", "--target-dir", os.path.join(workdir, "t"), config=cfg),
                  2)
        assert not os.path.exists(os.path.join(workdir, "t"))
    finally:
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", mnt], capture_output=True)
