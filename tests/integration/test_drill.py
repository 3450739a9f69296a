"""Restore drills through the real binary against a real PostgreSQL 15.

One source cluster per module archives its WAL into a repository with
`pgdrill archive-push` (as the server user, like test_pitr.py), has sample
data, one backup, and more changes and WAL after it. Then:
- a drill as root (drill-user = the server user, its own network namespace)
  passes, with every check and the RTO phases recorded; `list` shows it;
  `status --prometheus` passes the prometheus_client parser;
- a drill run by the server user itself (no root, no namespace) passes, and
  its user checks see listen_addresses = '' and archive_mode = off inside
  the running instance;
- each of these fails with exit 3 and names why: a flipped byte in the
  stored base.tar, a WAL segment missing between the backup and the newest
  WAL, a user check returning false, an index made inconsistent in the
  source before the backup (found by amcheck);
- --keep leaves an instance with no TCP listener, on a socket and port of
  its own; the source saw no connection from the drill (log_connections);
- SIGTERM to pgdrill mid-drill leaves no postgres process and no scratch
  directory;
- root without drill-user is refused with exit 2, before anything is made.
Damage is done to copies of the repository, never to the module's own."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from harness import (SESSION, HarnessError, Postgres, ensure_user, chown_tree_to_server_user, describe,
                     run_pgdrill, run_pgdrill_as_server, server_binary, wait_for, write_config)
from harness import pg_factory, workdir  # noqa: F401  (fixtures)

CLUSTER = "main"
# Drills as root run as a user of their own: the server user owns the repository.
DRILL_USER = "pgdrill-drill"
ROOT_KEYS = SESSION.mkdir("root-keys")
if os.geteuid() == 0:
    ensure_user(DRILL_USER)


def archive_command(cfg):
    return f"'{server_binary()}' --config '{cfg}' archive-push %p"


class Source:
    """The module's source cluster, its repository and its one backup."""

    def __init__(self):
        self.dir = SESSION.mkdir("drill-src")
        os.chmod(self.dir, 0o755)
        self.repo = os.path.join(self.dir, "repo")
        os.mkdir(self.repo, 0o700)
        self.key = os.path.join(self.dir, "main.key")
        self.pg = Postgres(name="drill-pg", settings={"log_connections": "on"}).init()
        self.cfg = self.config(self.repo)
        self.pg.set(wal_level="replica", archive_mode="on",
                    archive_command=archive_command(self.cfg))
        chown_tree_to_server_user(self.dir)
        self.pg.start()
        proc = run_pgdrill_as_server("init", "--generate-key-file", self.key, config=self.cfg)
        assert proc.returncode == 0, describe(proc)
        self.pg.psql("CREATE TABLE accounts (id int PRIMARY KEY, balance int);"
                     "INSERT INTO accounts SELECT g, g % 100 FROM generate_series(1, 20000) g;"
                     "CREATE TABLE events (id serial PRIMARY KEY, note text);"
                     "INSERT INTO events (note) SELECT md5(g::text) FROM generate_series(1, 5000) g;")
        self.pg.psql("CREATE DATABASE app")
        self.pg.psql("CREATE TABLE orders (id int PRIMARY KEY); "
                     "INSERT INTO orders SELECT generate_series(1, 3000)", db="app")
        proc = run_pgdrill_as_server("backup", "--json", config=self.cfg)
        assert proc.returncode == 0, describe(proc)
        self.backup = json.loads(proc.stdout)
        # After the backup: changes the drill must replay from archived WAL.
        self.pg.psql("INSERT INTO events (note) SELECT 'after' FROM generate_series(1, 777)")
        self.switch_and_wait()
        self.pg.psql("INSERT INTO events (note) SELECT 'later' FROM generate_series(1, 100)")
        self.switch_and_wait()

    def config(self, repo, **extra):
        keys = {"repo": repo, "key-file": self.key, **self.pg.config_lines()}
        keys.update(extra)
        return write_config({CLUSTER: keys}, directory=self.dir,
                            name=f"pgdrill-{os.path.basename(repo)}.conf", owner="server")

    def switch_and_wait(self):
        name = self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())").strip()
        path = os.path.join(self.repo, CLUSTER, "wal", name[:16], name)
        wait_for(lambda: os.path.exists(path), 60, f"{name} to be archived")
        return name

    def copy_repo(self, name):
        """A copy of the repository to damage, with a config naming it."""
        dest = os.path.join(self.dir, name)
        shutil.copytree(self.repo, dest, symlinks=True)
        chown_tree_to_server_user(dest)
        return dest


@pytest.fixture(scope="module")
def source():
    src = Source()
    yield src
    src.pg.destroy()


def drill_as_root(cfg, *args, timeout=300):
    return run_pgdrill("drill", *args, config=cfg, timeout=timeout)


def root_key(key):
    """pgdrill as root uses a key file root owns (it refuses another user's)."""
    copy = os.path.join(ROOT_KEYS, os.path.basename(os.path.dirname(key)) + ".key")
    if not os.path.exists(copy):
        shutil.copyfile(key, copy)
        os.chmod(copy, 0o600)
    return copy


def drill_cfg(source, repo=None, **extra):
    drills = os.path.join(source.dir, "drills")
    os.makedirs(drills, exist_ok=True)
    os.chmod(drills, 0o755)
    return source.config(repo or source.repo, **{"drill-user": DRILL_USER, "drill-dir": drills,
                                                  "key-file": root_key(source.key), **extra})


def checks_of(report):
    return {c["name"]: c for c in report["checks"]}


# ---------------------------------------------------------------- passing drills

def test_drill_as_root_passes_and_records_phases(source):
    # notify-command (notify-on = always) hears of the passed drill too.
    notified = os.path.join(ROOT_KEYS, "notified-pass.json")
    notifier = os.path.join(ROOT_KEYS, "notifier-pass")
    with open(notifier, "w") as f:
        f.write("#!/bin/sh\n{ env | grep '^PGDRILL_' | sort; echo; cat; } > \"$1\"\n")
    os.chmod(notifier, 0o700)
    cfg = drill_cfg(source, **{"notify-command": f"{notifier} {notified}"})
    proc = drill_as_root(cfg, "--json")
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    with open(notified) as f:
        env_text, _, stdin = f.read().partition("\n\n")
    env = dict(line.split("=", 1) for line in env_text.splitlines())
    assert env["PGDRILL_EVENT"] == "drill" and env["PGDRILL_RESULT"] == "success", env
    assert env["PGDRILL_EXIT_CODE"] == "0" and env["PGDRILL_DRILL_ID"] == report["id"], env
    assert env["PGDRILL_BACKUP_ID"] == report["backup_id"], env
    assert json.loads(stdin) == report
    assert report["result"] == "pass"
    assert report["backup_id"] == source.backup["id"]
    for phase in ("restore", "recovery", "checks"):
        assert report["phases"][phase] > 0, report["phases"]
    assert abs(report["rto_seconds"] -
               (report["phases"]["restore"] + report["phases"]["recovery"])) < 0.01
    assert report["recovery_target"]["type"] == "latest"
    checks = checks_of(report)
    for name in ("wal archive", "restore", "pg_verifybackup", "row counts", "recovery target",
                 "databases", "amcheck"):
        assert checks[name]["result"] == "pass", checks[name]
    # The tables compared are named (the backup may have counted fewer).
    assert "public.accounts in postgres" in checks["row counts"]["detail"], checks["row counts"]
    fetched = int(re.search(r"and (\d+) WAL files", checks["restore"]["detail"]).group(1))
    assert fetched >= 2, checks["restore"]
    # Recovery replayed past the backup: to the newest archived segment.
    stop = int(source.backup["stop_lsn"].split("/")[0], 16) << 32 | \
        int(source.backup["stop_lsn"].split("/")[1], 16)
    hi, lo = report["reached_lsn"].split("/")
    assert (int(hi, 16) << 32 | int(lo, 16)) > stop
    # Nothing is left in drill-dir.
    assert os.listdir(os.path.join(source.dir, "drills")) == []

    proc = run_pgdrill("list", "--json", config=cfg)
    assert proc.returncode == 0, describe(proc)
    listed = json.loads(proc.stdout)
    assert listed[0]["last_drill"]["id"] == report["id"]
    assert listed[0]["last_drill"]["result"] == "pass"
    proc = run_pgdrill("list", config=cfg)
    assert f"pass {report['id']}" in proc.stdout, proc.stdout
    # The server user owns the repository, and still reads all of it after
    # root's drill wrote its report there (its backup, status and expire too).
    reports = os.path.join(source.repo, CLUSTER, "drills")
    for path in [reports] + [os.path.join(reports, n) for n in os.listdir(reports)]:
        assert os.stat(path).st_uid == os.stat(source.repo).st_uid, path
    # (drill_cfg rewrote source.cfg with root's key: a file of its own.)
    server_cfg = write_config({CLUSTER: {"repo": source.repo, "key-file": source.key,
                                         **source.pg.config_lines()}},
                              directory=source.dir, name="server-view.conf", owner="server")
    proc = run_pgdrill_as_server("list", "--json", config=server_cfg)
    assert proc.returncode == 0, describe(proc)
    assert json.loads(proc.stdout)[0]["last_drill"]["id"] == report["id"]
    proc = run_pgdrill_as_server("status", "--json", config=server_cfg)
    assert proc.returncode == 0, describe(proc)

    proc = run_pgdrill("status", "--prometheus", config=cfg)
    assert proc.returncode == 0, describe(proc)
    from prometheus_client.parser import text_string_to_metric_families
    samples = {s.name: s for fam in text_string_to_metric_families(proc.stdout)
               for s in fam.samples}
    for name in ("pgdrill_last_backup_timestamp_seconds", "pgdrill_last_drill_timestamp_seconds",
                 "pgdrill_last_drill_success", "pgdrill_last_drill_rto_seconds",
                 "pgdrill_wal_last_archived_timestamp_seconds", "pgdrill_repository_size_bytes"):
        assert name in samples, (name, proc.stdout)
        assert samples[name].labels == {"cluster": CLUSTER}
    assert samples["pgdrill_last_drill_success"].value == 1
    assert abs(samples["pgdrill_last_drill_rto_seconds"].value - report["rto_seconds"]) < 0.01
    assert samples["pgdrill_repository_size_bytes"].value > 0
    proc = run_pgdrill("status", "--json", config=cfg)
    status = json.loads(proc.stdout)
    assert status["last_drill"]["id"] == report["id"]
    assert status["last_backup"]["id"] == source.backup["id"]


def test_drill_as_server_user_sees_its_isolation(source):
    # A config line holds 199 characters at most.
    check = ("SELECT current_setting('listen_addresses') || current_setting('archive_mode') || "
             "current_setting('shared_preload_libraries') = 'off'")
    drills = os.path.join(source.dir, "drills")
    repo = source.copy_repo("repo-server-user")
    with open(os.path.join(source.dir, "checks.sql"), "w") as f:
        f.write("-- the rows written after the backup are there\n"
                "SELECT count(*) = 5877 FROM events;\n")
    chown_tree_to_server_user(source.dir)
    cfg = source.config(repo, **{"drill-dir": drills, "drill-check": check})
    proc = run_pgdrill_as_server("drill", "--json", "--target", "random", config=cfg)
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    checks = checks_of(report)
    assert checks["user check 1"]["result"] == "pass", checks
    assert report["recovery_target"]["chosen"] == "random"
    # A random target may stop before the later rows; the default target does not.
    cfg = source.config(repo, **{"drill-dir": drills, "drill-check": check,
                                 "drill-check-file": os.path.join(source.dir, "checks.sql")})
    proc = run_pgdrill_as_server("drill", "--json", config=cfg)
    assert proc.returncode == 0, describe(proc)
    checks = checks_of(json.loads(proc.stdout))
    assert checks["user check 2"]["result"] == "pass", checks


# ---------------------------------------------------------------- failing drills

def test_flipped_byte_in_base_object_fails(source):
    repo = source.copy_repo("repo-flipped")
    obj = os.path.join(repo, CLUSTER, "backups", source.backup["id"], "base.tar")
    with open(obj, "r+b") as f:
        f.seek(os.path.getsize(obj) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))
    proc = drill_as_root(drill_cfg(source, repo), "--json")
    assert proc.returncode == 3, describe(proc)
    report = json.loads(proc.stdout)
    assert report["result"] == "fail"
    assert checks_of(report)["restore"]["result"] == "fail"
    assert "base.tar" in report["failure"], report["failure"]
    assert re.search(r"drill of backup \S+ FAILED: .*base\.tar", proc.stderr), proc.stderr


def test_missing_wal_segment_fails(source):
    repo = source.copy_repo("repo-gap")
    stop_seg = int(source.backup["stop_lsn"].split("/")[1], 16) // (16 << 20)
    hi = int(source.backup["stop_lsn"].split("/")[0], 16)
    tli = source.backup["timeline"]
    name = f"{tli:08X}{hi:08X}{stop_seg + 1:08X}"
    os.unlink(os.path.join(repo, CLUSTER, "wal", name[:16], name))
    proc = drill_as_root(drill_cfg(source, repo), "--json")
    assert proc.returncode == 3, describe(proc)
    report = json.loads(proc.stdout)
    assert checks_of(report)["wal archive"]["result"] == "fail"
    assert name in report["failure"], report["failure"]


def test_failing_user_check_fails(source):
    # notify-command gets the failed drill: ids, result and the report on stdin.
    notified = os.path.join(ROOT_KEYS, "notified.json")
    notifier = os.path.join(ROOT_KEYS, "notifier")
    with open(notifier, "w") as f:
        f.write("#!/bin/sh\n{ env | grep '^PGDRILL_' | sort; echo; cat; } > \"$1\"\n")
    os.chmod(notifier, 0o700)
    cfg = drill_cfg(source, **{"drill-check": "SELECT count(*) = 1 FROM accounts",
                               "notify-command": f"{notifier} {notified}", "notify-on": "failure"})
    proc = drill_as_root(cfg, "--json")
    assert proc.returncode == 3, describe(proc)
    report = json.loads(proc.stdout)
    check = checks_of(report)["user check 1"]
    assert check["result"] == "fail"
    assert "returned f" in check["detail"], check
    with open(notified) as f:
        env_text, _, stdin = f.read().partition("\n\n")
    env = dict(line.split("=", 1) for line in env_text.splitlines())
    assert env["PGDRILL_EVENT"] == "drill" and env["PGDRILL_RESULT"] == "failure", env
    assert env["PGDRILL_EXIT_CODE"] == "3"
    assert env["PGDRILL_DRILL_ID"] == report["id"]
    assert env["PGDRILL_BACKUP_ID"] == report["backup_id"] == source.backup["id"]
    assert "FAILED" in env["PGDRILL_MESSAGE"], env
    assert json.loads(stdin) == report


def test_index_corrupted_before_backup_is_found_by_amcheck(pg_factory, workdir):
    """The index's operator class compares one way when the index is built
    and the other way afterwards: the stored order then violates the
    opclass, which is what bt_index_check reports for a corrupt page order."""
    src = pg_factory()
    src.psql("""
        CREATE FUNCTION cmp(int4, int4) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT btint4cmp($1, $2)';
        CREATE OPERATOR CLASS flipped FOR TYPE int4 USING btree AS
            OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
            FUNCTION 1 cmp(int4, int4);
        CREATE TABLE t (a int4);
        INSERT INTO t SELECT generate_series(1, 5000);
        CREATE INDEX t_a ON t (a flipped);
        CREATE OR REPLACE FUNCTION cmp(int4, int4) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT btint4cmp($2, $1)';
    """)
    key = os.path.join(workdir, "k")
    os.mkdir(os.path.join(workdir, "repo"), 0o700)
    chown_tree_to_server_user(workdir)
    cfg = write_config({CLUSTER: {"repo": os.path.join(workdir, "repo"), "key-file": key,
                                  "drill-user": DRILL_USER, **src.config_lines()}},
                       directory=workdir, owner="server")
    assert run_pgdrill_as_server("init", "--generate-key-file", key, config=cfg).returncode == 0
    proc = run_pgdrill_as_server("backup", config=cfg)
    assert proc.returncode == 0, describe(proc)
    cfg = write_config({CLUSTER: {"repo": os.path.join(workdir, "repo"), "key-file": root_key(key),
                                  "drill-user": DRILL_USER, **src.config_lines()}},
                       directory=workdir, name="root.conf")
    proc = drill_as_root(cfg, "--json")
    assert proc.returncode == 3, describe(proc)
    check = checks_of(json.loads(proc.stdout))["amcheck"]
    assert check["result"] == "fail"
    assert "t_a" in check["detail"], check


# ---------------------------------------------------------------- isolation and cleanup

def tcp_listeners(pid):
    """Listening TCP ports in the network namespace of process pid."""
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].split(":")[1], 16))
    return ports


def connections_logged(source):
    with open(source.pg.log_path, errors="replace") as f:
        return sum("connection authorized" in line for line in f)


def test_kept_instance_is_isolated_and_production_untouched(source):
    before = connections_logged(source)
    cfg = drill_cfg(source)
    proc = drill_as_root(cfg, "--keep", "--json")
    assert proc.returncode == 0, describe(proc)
    kept = json.loads(proc.stdout)["kept"]
    try:
        with open(os.path.join(kept["data"], "postmaster.pid")) as f:
            pid = int(f.readline())
        assert kept["socket"] != source.pg.sockdir and kept["port"] != source.pg.port
        assert kept["socket"].startswith(os.path.join(source.dir, "drills"))
        assert os.path.exists(os.path.join(kept["socket"], f".s.PGSQL.{kept['port']}"))
        assert tcp_listeners(pid) == set()
        # Its own network namespace (pgdrill ran as root).
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        out = subprocess.run(
            [source.pg.bin("psql"), "-h", kept["socket"], "-p", str(kept["port"]), "-U",
             kept["user"], "-d", "postgres", "-Atc",
             "SELECT current_setting('archive_mode'), current_setting('listen_addresses'), "
             "pg_is_in_recovery()"], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "off||f", out
    finally:
        subprocess.run(["kill", "-INT", str(pid)])
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 60, "the kept instance to stop")
        shutil.rmtree(kept["dir"], ignore_errors=True)
    assert connections_logged(source) == before


def postgres_under(path):
    out = subprocess.run(["pgrep", "-f", path], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_sigterm_mid_drill_leaves_nothing(source):
    drills = os.path.join(source.dir, "drills-term")
    os.makedirs(drills, exist_ok=True)
    cfg = source.config(source.repo, **{"drill-user": DRILL_USER, "drill-dir": drills,
                                        "key-file": root_key(source.key)})
    proc = subprocess.Popen([os.environ["PGDRILL_BIN"], "--config", cfg, "drill"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: postgres_under(drills) or proc.poll() is not None, 120,
                 "the drill instance to start")
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the drill ended first: {proc.returncode}\n{out}\n{err}")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, err)
    assert postgres_under(drills) == [], err
    assert os.listdir(drills) == [], err
    assert "drill interrupted" in err, err


def test_drill_user_owning_the_repository_is_refused(source):
    """The instance runs the backup's SQL as superuser: never as the repository's owner."""
    owner = subprocess.run(["stat", "-c", "%U", source.repo], capture_output=True,
                           text=True).stdout.strip()
    proc = drill_as_root(drill_cfg(source, **{"drill-user": owner}))
    assert proc.returncode == 2, describe(proc)
    assert f'drill-user "{owner}" owns' in proc.stderr, proc.stderr
    assert os.listdir(os.path.join(source.dir, "drills")) == []


def test_root_without_drill_user_is_refused(source):
    cfg = source.config(source.repo, **{"drill-dir": os.path.join(source.dir, "drills"),
                                        "key-file": root_key(source.key)})
    proc = drill_as_root(cfg)
    assert proc.returncode == 2, describe(proc)
    assert "drill-user" in proc.stderr


def test_not_enough_disk_is_said_before_anything(source):
    """drill-dir on a 2 MiB tmpfs: exit 1, how much is needed, nothing made."""
    small = os.path.join(source.dir, "small")
    os.makedirs(small, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", small],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        cfg = drill_cfg(source, **{"drill-dir": small})
        proc = drill_as_root(cfg)
        assert proc.returncode == 1, describe(proc)
        assert "not enough disk space for the drill" in proc.stderr
        assert re.search(r"needs about [\d.]+ MiB", proc.stderr), proc.stderr
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", small])


def test_rto_objective_is_judged_and_enforced(source):
    cfg = drill_cfg(source, **{"drill-rto-objective": "1"})
    proc = drill_as_root(cfg, "--json", "--enforce-rto")
    report = json.loads(proc.stdout)
    assert report["result"] == "pass", describe(proc)
    assert report["rto_objective_seconds"] == 1
    exceeded = report["rto_seconds"] > 1
    assert report["rto_result"] == ("exceeded" if exceeded else "met")
    assert proc.returncode == (3 if exceeded else 0), describe(proc)
    if exceeded:
        assert "beyond drill-rto-objective" in proc.stderr
