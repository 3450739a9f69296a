"""pgdrill expire through the real binary, with real backups of a real
PostgreSQL 15 that archives its WAL with `pgdrill archive-push` (as the
server user, like test_pitr.py: every pgdrill command runs as that user).

- No retention key: nothing goes, and expire says so.
- retention-full: `--dry-run` (text and --json) names exactly what goes and
  changes nothing; the real run logs the same lines, removes the oldest
  backup and the WAL below the oldest kept backup's start (its .backup file
  too), keeps everything above; verify and list agree; a second run has
  nothing to do.
- retention-days (with PGDRILL_TEST_NOW ageing the backups) and both rules
  together: a backup goes only when both allow it.
- Incomplete backups: kept within retention-incomplete-grace (it may still
  be running), removed after it; expire refuses to run while the cluster's
  lock is held (a backup running), --dry-run still works.
- WAL across two timelines: a restore promoted with archiving on starts
  timeline 2 in the same repository; after expire no timeline-1 segment
  below the kept backups' start is left, 00000002.history is.
- retention-keep-drilled: the newest backup whose last drill passed (a real
  drill) is kept, one whose last drill failed is not; with the key off it
  goes.
- Crash safety (invariants of backup/expire.c): killed at successive
  points (PGDRILL_TEST_EXPIRE_CRASH), after each kill verify --backup all
  exits 0 and list --json matches the repository; the next run finishes.
- The same on an S3 repository (s3rver), with one kill.
"""

import fcntl
import itertools
import json
import os
import re
import subprocess
import time

from harness import (SESSION, ExistingPostgres, HarnessError, chown_to_server_user,
                     chown_tree_to_server_user, describe, error_lines, run_pgdrill_as_server,
                     server_binary, server_pgdrill_env, server_user_kwargs, stderr_lines, tail,
                     wait_for, write_config)
from harness import pg_factory, s3, workdir  # noqa: F401  (fixtures)
from s3common import PREFIX
from s3common import archive_command as s3_archive_command
from s3common import s3_config
from s3common import wait_archived as s3_wait_archived

CLUSTER = "main"
SEG_SIZE = 16 * 1024 * 1024
CONFIG_NUMBER = itertools.count(1)


def pgdrill(*args, cfg, env=None):
    return run_pgdrill_as_server(*args, config=cfg, env=env)


def archive_command(cfg):
    return f"'{server_binary()}' --config '{cfg}' archive-push %p"


def lsn_segno(lsn):
    hi, lo = lsn.split("/")
    return ((int(hi, 16) << 32) + int(lo, 16)) // SEG_SIZE


def wal_name_key(name):
    """(timeline, segno) of a segment, .partial or .backup name, or None."""
    if len(name) < 24 or name.endswith(".history"):
        return None
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    return tli, log * 256 + seg


class Cluster:
    """A source cluster archiving into a posix repository, as the server user."""

    def __init__(self, pg_factory, workdir, server=None):
        self.workdir = workdir
        self.repo = os.path.join(workdir, "repo")
        self.key = os.path.join(workdir, "main.key")
        os.makedirs(self.repo, 0o700, exist_ok=True)
        chown_to_server_user(self.repo)
        self.pg = server or pg_factory(start=False)
        self.cfg = self.config()
        self.pg.set(wal_level="replica", archive_mode="on",
                    archive_command=archive_command(self.cfg))
        self.pg.start()
        if server is not None:  # a restored server: wait for the end of its recovery
            def promoted():
                if not os.path.exists(os.path.join(server.data, "postmaster.pid")):
                    raise HarnessError("the restored server stopped during recovery")
                return server.psql("SELECT pg_is_in_recovery()",
                                   check=False).stdout.strip() == "f"
            try:
                wait_for(promoted, 120, "recovery to end", interval=0.2)
            except HarnessError as e:
                raise AssertionError(f"{e}\nlog:\n{tail(server.log_path)}") from None
        self.pg.psql("CREATE TABLE IF NOT EXISTS t (g int, h text)")
        if not os.path.exists(os.path.join(self.repo, CLUSTER, "repo.json")):
            proc = pgdrill("init", "--generate-key-file", self.key, cfg=self.cfg)
            assert proc.returncode == 0, describe(proc)

    def config(self, name=None, **keys):
        lines = {"repo": self.repo, "key-file": self.key, **self.pg.config_lines()}
        lines.update({k.replace("_", "-"): v for k, v in keys.items()})
        name = name or f"pgdrill-{next(CONFIG_NUMBER)}.conf"
        return write_config({CLUSTER: lines}, directory=self.workdir, name=name, owner="server")

    def wal_dir(self):
        return os.path.join(self.repo, CLUSTER, "wal")

    def switch_and_wait(self):
        self.pg.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
        name = self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())").strip()
        path = os.path.join(self.wal_dir(), name[:16], name)
        try:
            wait_for(lambda: os.path.exists(path), 60, f"{name} to be archived", interval=0.05)
        except HarnessError as e:
            raise AssertionError(f"{e}\nlog:\n{tail(self.pg.log_path)}") from None
        return name

    def backup(self):
        """A backup with archived WAL before and after it; returns its manifest."""
        self.switch_and_wait()
        proc = pgdrill("backup", "--json", cfg=self.cfg)
        assert proc.returncode == 0, describe(proc)
        self.switch_and_wait()
        return json.loads(proc.stdout)

    def wal_files(self):
        out = set()
        for dirpath, _, files in os.walk(self.wal_dir()):
            out.update(files)
        return out

    def backup_dirs(self, with_empty=False):
        """The backup directories holding objects (an empty one is no backup)."""
        path = os.path.join(self.repo, CLUSTER, "backups")
        if not os.path.isdir(path):
            return set()
        return {d for d in os.listdir(path)
                if with_empty or any(files for _, _, files in os.walk(os.path.join(path, d)))}

    def snapshot(self):
        """Every file of the repository but the lock, with its size."""
        out = {}
        for dirpath, _, files in os.walk(os.path.join(self.repo, CLUSTER)):
            for f in files:
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, self.repo)] = os.path.getsize(p)
        out.pop(os.path.join(CLUSTER, "lock"), None)
        out.pop(os.path.join(CLUSTER, "readers.lock"), None)
        return out

    def listed(self, cfg=None):
        proc = pgdrill("list", "--json", cfg=cfg or self.cfg)
        assert proc.returncode == 0, describe(proc)
        return {b["id"]: b for b in json.loads(proc.stdout)}

    def assert_consistent(self, cfg=None):
        """verify --backup all passes and list matches what is on disk."""
        cfg = cfg or self.cfg
        listed = self.listed(cfg)
        assert set(listed) == self.backup_dirs(), (listed, self.backup_dirs())
        for bid, b in listed.items():
            manifest = os.path.join(self.repo, CLUSTER, "backups", bid, "manifest.json")
            assert (b["state"] == "complete") == os.path.exists(manifest), b
            if b["state"] == "complete":
                assert b["start_lsn"] and b["timeline"], b
        if any(b["state"] == "complete" for b in listed.values()):
            proc = pgdrill("verify", "--backup", "all", cfg=cfg)
            assert proc.returncode == 0, describe(proc)
        return listed

    def assert_wal_floor(self, kept):
        """Every WAL file below the floor of its timeline is gone, every other is there."""
        starts = [(b["timeline"], lsn_segno(b["start_lsn"])) for b in kept]
        for name in self.wal_files():
            key = wal_name_key(name)
            if key is None:
                continue
            tli, segno = key
            own = [s for t, s in starts if t <= tli]
            floor = min(own) if own else min(s for _, s in starts)
            assert segno >= floor, f"{name} below the floor {floor:X} is still there"
        return starts


def expire(cluster, *args, env=None, **keys):
    # --verbose: the tests read expire's info lines, which stderr that is not
    # a terminal (cron, here a pipe) does not get by default.
    return pgdrill("--verbose", "expire", *args, cfg=cluster.config(**keys), env=env)


def info_lines(proc):
    return [line[len("pgdrill: info: "):] for line in stderr_lines(proc)
            if line.startswith("pgdrill: info: ")]


def wal_below(files, tli_floor):
    """The WAL files below their timeline's floor: tli_floor(tli) -> segno."""
    out = set()
    for name in files:
        key = wal_name_key(name)
        if key and key[1] < tli_floor(key[0]):
            out.add(name)
    return out


# ---------------------------------------------------------------- retention-full

def test_no_retention_keeps_everything_then_retention_full(pg_factory, workdir):
    c = Cluster(pg_factory, workdir)
    b1, b2, b3 = c.backup(), c.backup(), c.backup()
    c.assert_consistent()
    before = c.snapshot()

    # No retention key: nothing goes, and it says so.
    proc = expire(c)
    assert proc.returncode == 0, describe(proc)
    assert any("no retention-full or retention-days is set" in line
               for line in stderr_lines(proc)), describe(proc)
    assert c.snapshot() == before

    # The plan: b1 goes, and the WAL below b2's start segment (b1's .backup file too).
    floor = lsn_segno(b2["start_lsn"])
    going = wal_below(c.wal_files(), lambda tli: floor)
    assert going
    assert any(n.endswith(".backup") for n in going), going
    proc = expire(c, "--dry-run", retention_full=2)
    assert proc.returncode == 0, describe(proc)
    out = proc.stdout.splitlines()
    assert any(line.startswith(f"remove backup {b1['id']} (physical, finished ")
               and line.endswith("beyond retention") for line in out), proc.stdout
    assert any(line.startswith(f"keep backup {b2['id']} ") for line in out), proc.stdout
    assert any(line.startswith(f"keep backup {b3['id']} ") and "newest complete backup" in line
               for line in out), proc.stdout
    first, last = min(going), max(going)
    wal_line = [line for line in out if line.startswith("remove WAL of timeline 1: ")]
    assert len(wal_line) == 1, proc.stdout
    assert f"{len(going)} files from {first} to {last}" in wal_line[0], (wal_line, going)
    assert out[-1].startswith("would free ") and "1 backup and" in out[-1], proc.stdout
    assert c.snapshot() == before  # a dry run removes nothing

    proc = expire(c, "--dry-run", "--json", retention_full=2)
    assert proc.returncode == 0, describe(proc)
    plan = json.loads(proc.stdout)
    assert plan["dry_run"] is True
    actions = {b["id"]: b["action"] for b in plan["backups"]}
    assert actions == {b1["id"]: "remove", b2["id"]: "keep", b3["id"]: "keep"}, plan
    assert plan["removed_backups"] == 1 and plan["removed_wal_files"] == len(going), plan
    wal_bytes = sum(size for path, size in before.items()
                    if os.path.basename(path) in going)
    b1_bytes = sum(size for path, size in before.items()
                   if path.startswith(os.path.join(CLUSTER, "backups", b1["id"]) + "/"))
    assert plan["wal"][0]["bytes"] == wal_bytes, plan
    assert plan["freed_bytes"] == wal_bytes + b1_bytes, plan

    # The real run logs the same lines and removes exactly that.
    proc = expire(c, retention_full=2)
    assert proc.returncode == 0, describe(proc)
    logged = info_lines(proc)
    assert any(line.startswith(f"remove backup {b1['id']} ") for line in logged), describe(proc)
    assert wal_line[0] in logged, describe(proc)
    assert logged[-1].startswith("freed "), describe(proc)
    assert c.backup_dirs() == {b2["id"], b3["id"]}
    assert not going & c.wal_files()
    after = c.snapshot()
    assert set(after) == {p for p in before if os.path.basename(p) not in going
                          and not p.startswith(os.path.join(CLUSTER, "backups", b1["id"]))}
    listed = c.assert_consistent()
    c.assert_wal_floor(listed.values())

    # Nothing left to do.
    proc = expire(c, retention_full=2)
    assert proc.returncode == 0, describe(proc)
    assert any(line.startswith("nothing to expire") for line in info_lines(proc)), describe(proc)
    assert c.snapshot() == after


# ---------------------------------------------------------------- retention-days

def test_retention_days_and_both_rules(pg_factory, workdir):
    c = Cluster(pg_factory, workdir)
    b1, b2 = c.backup(), c.backup()
    in_3_days = {"PGDRILL_TEST_NOW": str(int(time.time()) + 3 * 86400)}

    # Today both are within one day: nothing goes, even with retention-full = 1.
    proc = expire(c, retention_days=1, retention_full=1)
    assert proc.returncode == 0, describe(proc)
    assert c.backup_dirs() == {b1["id"], b2["id"]}

    # In three days both are older than the window; retention-full = 2 still keeps both.
    proc = expire(c, "--dry-run", "--json", env=in_3_days, retention_days=1, retention_full=2)
    assert proc.returncode == 0, describe(proc)
    assert json.loads(proc.stdout)["removed_backups"] == 0, proc.stdout
    proc = expire(c, env=in_3_days, retention_days=1, retention_full=2)
    assert proc.returncode == 0, describe(proc)
    assert c.backup_dirs() == {b1["id"], b2["id"]}

    # retention-days alone: only the newest stays (the start of the window).
    proc = expire(c, env=in_3_days, retention_days=1)
    assert proc.returncode == 0, describe(proc)
    assert c.backup_dirs() == {b2["id"]}
    c.assert_wal_floor(c.assert_consistent().values())


# ---------------------------------------------------------------- incomplete backups, lock

def test_incomplete_backup_grace_and_lock(pg_factory, workdir):
    c = Cluster(pg_factory, workdir)
    b1, b2 = c.backup(), c.backup()
    # b1 as a backup that crashed (or still runs) before its commit.
    os.unlink(os.path.join(c.repo, CLUSTER, "backups", b1["id"], "manifest.json"))
    c.assert_consistent()

    proc = expire(c, "--dry-run", retention_full=1)
    assert proc.returncode == 0, describe(proc)
    assert f"keep backup {b1['id']} (incomplete, " in proc.stdout, proc.stdout
    assert "may still be running" in proc.stdout, proc.stdout
    proc = expire(c, retention_full=1)
    assert proc.returncode == 0, describe(proc)
    assert c.backup_dirs() == {b1["id"], b2["id"]}

    # A backup running on this host holds the cluster's lock: expire waits
    # for none and removes nothing; --dry-run still plans.
    before = c.snapshot()
    with open(os.path.join(c.repo, CLUSTER, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = expire(c, retention_full=1, retention_incomplete_grace=0)
        assert proc.returncode == 1, describe(proc)
        errors = error_lines(proc)
        assert len(errors) == 1 and "busy" in errors[0] and "expire" in errors[0], describe(proc)
        proc = expire(c, "--dry-run", retention_full=1, retention_incomplete_grace=0)
        assert proc.returncode == 0, describe(proc)
        assert f"remove backup {b1['id']} (incomplete, " in proc.stdout, proc.stdout
    assert c.snapshot() == before

    # A restore, drill or verify reading the cluster holds the readers' lock
    # shared: expire waits, removing nothing, and goes on when it is free.
    readers = os.path.join(c.repo, CLUSTER, "readers.lock")
    cwd = SESSION.ensure_root()
    with open(readers, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        waiting = subprocess.Popen(
            [server_binary(), "--config", c.config(name="wait.conf", retention_full=1,
                                                   retention_incomplete_grace=0),
             "--verbose", "expire"],
            env=server_pgdrill_env(home=cwd), cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **server_user_kwargs())
        time.sleep(1.5)
        assert waiting.poll() is None, waiting.communicate()
        assert c.snapshot() == before
        # It does not hold the backup lock while it waits: a backup may start.
        with open(os.path.join(c.repo, CLUSTER, "lock"), "a") as backup_lock:
            fcntl.flock(backup_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, (out, err)
    assert "waiting for the restore, drill or verify" in err, err
    # Past the grace period (0 here) the incomplete backup went, once the
    # readers were done.
    assert f"remove backup {b1['id']} (incomplete, " in err, err
    assert c.backup_dirs() == {b2["id"]}
    c.assert_consistent()
    # ... and a verify waits while an expire (here: the test) holds it.
    with open(readers, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        verify = subprocess.Popen(
            [server_binary(), "--config", c.cfg, "--verbose", "verify", "--backup", "all"],
            env=server_pgdrill_env(home=cwd), cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **server_user_kwargs())
        time.sleep(1.5)
        assert verify.poll() is None, verify.communicate()
    out, err = verify.communicate(timeout=120)
    assert verify.returncode == 0, (out, err)
    assert "waiting for expire to finish" in err, err


# ---------------------------------------------------------------- two timelines

def test_wal_removal_across_two_timelines(pg_factory, workdir):
    c = Cluster(pg_factory, workdir)
    b1 = c.backup()
    c.switch_and_wait()
    c.pg.stop()  # timeline 1 ends here

    # A restore of b1, recovered to the end of the archive and promoted:
    # timeline 2, archiving into the same repository.
    target = os.path.join(workdir, "branch")
    proc = pgdrill("restore", "--target-dir", target, cfg=c.cfg)
    assert proc.returncode == 0, describe(proc)
    chown_tree_to_server_user(target)
    branch = ExistingPostgres(target, name="branch").init()
    try:
        c2 = Cluster(pg_factory, workdir, server=branch)
        assert branch.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == \
            "00000002"
        b2, b3 = c2.backup(), c2.backup()
        assert b2["timeline"] == 2 and b3["timeline"] == 2
        files = c2.wal_files()
        assert "00000002.history" in files
        tl1 = {n for n in files if n.startswith("00000001")}
        assert tl1, files

        proc = expire(c2, "--dry-run", retention_full=2)
        assert proc.returncode == 0, describe(proc)
        assert "remove WAL of timeline 1: " in proc.stdout, proc.stdout
        assert "remove WAL of timeline 2: " in proc.stdout, proc.stdout
        proc = expire(c2, retention_full=2)
        assert proc.returncode == 0, describe(proc)
        assert c2.backup_dirs() == {b2["id"], b3["id"]}
        left = c2.wal_files()
        assert "00000002.history" in left
        # Timeline 2 began after all of timeline 1: none of it is needed.
        assert not {n for n in left if n.startswith("00000001")}, left
        listed = c2.assert_consistent()
        c2.assert_wal_floor(listed.values())
        assert b1["id"] not in listed
    finally:
        branch.destroy()


# ---------------------------------------------------------------- keep-drilled

def test_keep_drilled(pg_factory, workdir):
    c = Cluster(pg_factory, workdir)
    drills = os.path.join(workdir, "drills")
    os.makedirs(drills, exist_ok=True)
    chown_to_server_user(drills)
    b1 = c.backup()
    proc = pgdrill("drill", "--backup", b1["id"], cfg=c.config(drill_dir=drills))
    assert proc.returncode == 0, describe(proc)
    b2 = c.backup()
    proc = pgdrill("drill", "--backup", b2["id"],
                   cfg=c.config(drill_dir=drills, drill_check="SELECT false"))
    assert proc.returncode == 3, describe(proc)
    b3 = c.backup()
    listed = c.listed()
    assert listed[b1["id"]]["last_drill"]["result"] == "pass", listed
    assert listed[b2["id"]]["last_drill"]["result"] == "fail", listed

    proc = expire(c, retention_full=1)
    assert proc.returncode == 0, describe(proc)
    assert c.backup_dirs() == {b1["id"], b3["id"]}
    listed = c.assert_consistent()
    # b1's WAL is kept: it can still be recovered to any point after it.
    assert c.assert_wal_floor(listed.values())[0] == (1, lsn_segno(b1["start_lsn"]))
    assert listed[b3["id"]]["recoverable_to_lsn"], listed

    proc = expire(c, "--dry-run", retention_full=1)
    assert f"keep backup {b1['id']} " in proc.stdout and \
        "newest backup whose last drill passed" in proc.stdout, proc.stdout
    proc = expire(c, retention_full=1, retention_keep_drilled="no")
    assert proc.returncode == 0, describe(proc)
    assert c.backup_dirs() == {b3["id"]}
    c.assert_wal_floor(c.assert_consistent().values())
    # Drill reports are history: they stay.
    assert len(os.listdir(os.path.join(c.repo, CLUSTER, "drills"))) == 2


# ---------------------------------------------------------------- crash safety

def test_kill_at_successive_points_then_finish(pg_factory, workdir):
    c = Cluster(pg_factory, workdir)
    b1, b2, b3 = c.backup(), c.backup(), c.backup()
    marker = os.path.join(c.repo, CLUSTER, "backups", b1["id"], "expiring")

    # Killed right after marking b1 (invariant 2, first half): b1 is still
    # complete. Kept by a later policy, it loses the stale marker.
    proc = expire(c, env={"PGDRILL_TEST_EXPIRE_CRASH": "1"}, retention_full=1)
    assert proc.returncode == 137, describe(proc)
    assert os.path.exists(marker)
    assert c.assert_consistent()[b1["id"]]["state"] == "complete"
    proc = expire(c, retention_full=3)
    assert proc.returncode == 0, describe(proc)
    assert not os.path.exists(marker)
    assert c.backup_dirs() == {b1["id"], b2["id"], b3["id"]}

    kills, mid_wal = 0, False
    floor = lsn_segno(b3["start_lsn"])
    for n in range(1, 80):
        proc = expire(c, env={"PGDRILL_TEST_EXPIRE_CRASH": str(n)}, retention_full=1)
        # Invariant (2)-(4): whatever was reached, the repository is consistent.
        listed = c.assert_consistent()
        assert b3["id"] in listed and listed[b3["id"]]["state"] == "complete", listed
        if proc.returncode == 0:
            break
        assert proc.returncode == 137, describe(proc)
        kills += 1
        # Killed among the WAL removals (invariant 4): backups done, WAL half.
        if c.backup_dirs() == {b3["id"]} and wal_below(c.wal_files(), lambda tli: floor):
            mid_wal = True
    else:
        raise AssertionError("expire never finished")
    assert kills >= 4 and mid_wal, (kills, mid_wal)
    assert c.backup_dirs(with_empty=True) == {b3["id"]}
    c.assert_wal_floor(c.assert_consistent().values())
    proc = expire(c, retention_full=1)
    assert any(line.startswith("nothing to expire") for line in info_lines(proc)), describe(proc)
    assert b1["id"] not in listed and b2["id"] not in listed


# ---------------------------------------------------------------- S3

def test_expire_on_s3(pg_factory, s3, workdir):
    src = pg_factory(start=False)
    cfg = s3_config(workdir, s3, src)
    src.set(wal_level="replica", archive_mode="on", archive_command=s3_archive_command(cfg))
    src.start()
    proc = pgdrill("init", "--generate-key-file", os.path.join(workdir, "main.key"), cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    ids = []
    for _ in range(3):
        src.psql("SELECT 1 FROM pg_switch_wal()")
        proc = pgdrill("backup", "--json", cfg=cfg)
        assert proc.returncode == 0, describe(proc)
        ids.append(json.loads(proc.stdout))
        seg = src.psql("SELECT pg_walfile_name(pg_switch_wal())")
        s3_wait_archived(s3, src, seg)
    wal = f"{PREFIX}/{CLUSTER}/wal/"
    floor = lsn_segno(ids[2]["start_lsn"])
    going = {o for o in s3.objects(wal)
             if wal_name_key(os.path.basename(o)) and
             wal_name_key(os.path.basename(o))[1] < floor}
    assert going

    # Killed after its first removals, then run again to the end.
    cfg1 = s3_config(workdir, s3, src, name="full1.conf", retention_full=1)
    proc = pgdrill("expire", cfg=cfg1, env={"PGDRILL_TEST_EXPIRE_CRASH": "3"})
    assert proc.returncode == 137, describe(proc)
    proc = pgdrill("verify", "--backup", "all", cfg=cfg1)
    assert proc.returncode == 0, describe(proc)
    still = going & set(s3.objects(wal))
    assert len(still) >= 2, still
    proc = pgdrill("expire", "--log-level", "debug", cfg=cfg1)
    assert proc.returncode == 0, describe(proc)
    # The WAL went in one DeleteObjects request, not one DELETE each.
    batches = [int(n) for n in re.findall(r"s3: deleted (\d+) objects \([^)]*/wal/", proc.stderr)]
    assert batches == [len(still)], describe(proc)
    proc = pgdrill("list", "--json", cfg=cfg1)
    assert proc.returncode == 0, describe(proc)
    assert [b["id"] for b in json.loads(proc.stdout)] == [ids[2]["id"]], proc.stdout
    objects = s3.objects(f"{PREFIX}/{CLUSTER}/backups/")
    assert objects and all(f"/backups/{ids[2]['id']}/" in o for o in objects), objects
    assert not going & set(s3.objects(wal))
    proc = pgdrill("verify", "--backup", "all", cfg=cfg1)
    assert proc.returncode == 0, describe(proc)
