"""status and check for operations (issue #10): `check --nagios` states and
exit codes against the alert-* thresholds (OK, WARNING, CRITICAL; CRITICAL
with the reason when the database is down; UNKNOWN for a configuration
error), the least-privilege findings of `check --json` (a superuser role is
warned, a LOGIN REPLICATION role is clean, a 0644 config file and a
`host replication ... trust` line open to the network are warned), and the
capacity forecast of `status --json` and `--prometheus` on a repository
whose growth the test knows: real backups (their sizes and end times from
`list --json`) and real WAL segments whose archive times the test sets; on
S3 the free space and so the forecast are unknown, and said so.

pgdrill runs as the test's user here: nothing but the test writes the
repository (no archive_command), so WAL reaches it through `archive-push`
run by the test on segments the server just finished."""

import json
import os
import re
import time
from datetime import datetime

from harness import describe, pg, run_pgdrill, s3, stderr_lines, workdir, write_config  # noqa: F401

CLUSTER = "main"


def setup_repo(workdir, pg, **extra):
    key = os.path.join(workdir, "key")
    keys = {"repo": os.path.join(workdir, "repo"), "key-file": key, **pg.config_lines(), **extra}
    cfg = write_config({CLUSTER: keys}, directory=workdir)
    proc = run_pgdrill("init", "--generate-key-file", key, config=cfg)
    assert proc.returncode == 0, describe(proc)
    return cfg


def backup(cfg):
    proc = run_pgdrill("backup", config=cfg)
    assert proc.returncode == 0, describe(proc)


def push_wal(pg, cfg):
    """Finishes the current segment and archives it with archive-push; returns its name."""
    pg.psql("CREATE TABLE IF NOT EXISTS w (g int); INSERT INTO w SELECT generate_series(1, 1000)")
    name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    proc = run_pgdrill("archive-push", os.path.join(pg.data, "pg_wal", name), config=cfg)
    assert proc.returncode == 0, describe(proc)
    return name


def wal_path(workdir, name):
    return os.path.join(workdir, "repo", CLUSTER, "wal", name[:16], name)


def status_json(cfg, *args):
    proc = run_pgdrill("status", "--json", *args, config=cfg)
    assert proc.returncode == 0, describe(proc)
    return json.loads(proc.stdout)


def nagios(cfg, *args):
    proc = run_pgdrill("check", "--nagios", *args, config=cfg)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, describe(proc)
    m = re.match(r"^PGDRILL (OK|WARNING|CRITICAL|UNKNOWN) - (.*?)(?: \| (.*))?$", lines[0])
    assert m, describe(proc)
    assert proc.returncode == ["OK", "WARNING", "CRITICAL", "UNKNOWN"].index(m.group(1)), describe(proc)
    return m.group(1), m.group(2), m.group(3) or ""


def perf(perfdata):
    """{'label': (value, uom, warn, crit, min, max)} from Nagios perfdata."""
    out = {}
    for m in re.finditer(r"'([^']+)'=([-0-9.]+)([a-zA-Z%]*);([^;]*);([^;]*);([^; ]*);([^ ]*)", perfdata):
        out[m.group(1)] = (float(m.group(2)), m.group(3), m.group(4), m.group(5), m.group(6), m.group(7))
    return out


def epoch(rfc3339):
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


def test_nagios_thresholds(workdir, pg):
    cfg = setup_repo(workdir, pg)
    # Nothing backed up yet: CRITICAL, saying what to do.
    state, text, _ = nagios(cfg, "--alert-drill-age", "off")
    assert state == "CRITICAL" and "no complete backup" in text, text
    backup(cfg)
    push_wal(pg, cfg)
    time.sleep(1.1)  # so that the backup's age is at least one second

    # OK: the defaults (26h,50h; 1h,4h) and no drill check.
    state, text, perfdata = nagios(cfg, "--alert-drill-age", "off")
    assert state == "OK", text
    p = perf(perfdata)
    age = p["backup_age"]
    assert age[1] == "s" and age[2:5] == (str(26 * 3600), str(50 * 3600), "0"), perfdata
    assert 1 <= age[0] < 3600, perfdata
    assert p["archive_age"][1] == "s" and p["archive_age"][2:4] == ("3600", "14400"), perfdata
    assert p["archive_lag"][1] == "B", perfdata
    assert p["repository_size"][1] == "B" and p["repository_size"][0] > 0, perfdata
    assert p["repository_free"][1] == "B" and p["repository_free"][0] > 0, perfdata

    # WARNING: the backup is older than the warning level, younger than the critical one.
    state, text, perfdata = nagios(cfg, "--alert-drill-age", "off", "--alert-backup-age", "0s,1d")
    assert state == "WARNING", text
    assert text.startswith(f"cluster {CLUSTER}: WARNING last backup"), text
    assert perf(perfdata)["backup_age"][2:4] == ("0", "86400"), perfdata

    # CRITICAL: older than the critical level too.
    state, text, _ = nagios(cfg, "--alert-drill-age", "off", "--alert-backup-age", "0,0")
    assert state == "CRITICAL" and "CRITICAL last backup" in text, text

    # No drill yet is a warning by default: no backup is proven to restore.
    state, text, _ = nagios(cfg)
    assert state == "WARNING" and "no drill yet" in text, text

    # An archive lag threshold does not fire while the server has not filled a
    # segment since the newest archived one: an idle server archives nothing.
    state, text, _ = nagios(cfg, "--alert-drill-age", "off", "--alert-archive-lag", "0,0")
    assert state == "OK", text
    assert "(current)" in text, text

    # The database down: CRITICAL with the reason; the repository part is still evaluated.
    pg.stop()
    state, text, perfdata = nagios(cfg, "--alert-drill-age", "off")
    assert state == "CRITICAL", text
    assert "CRITICAL postgresql:" in text and pg.sockdir in text, text
    assert "backup_age" in perfdata, perfdata

    # pgdrill cannot evaluate (a bad threshold): UNKNOWN, exit 3.
    state, text, _ = nagios(cfg, "--alert-backup-age", "2h,1h")
    assert state == "UNKNOWN" and "alert-backup-age" in text, text
    # --nagios goes alone.
    proc = run_pgdrill("check", "--nagios", "--json", config=cfg)
    assert proc.returncode == 2, describe(proc)


def findings(cfg, *args):
    proc = run_pgdrill("check", "--json", *args, config=cfg)
    doc = json.loads(proc.stdout)
    # stderr holds log lines only (the server's archiving is off here: one warning).
    assert all(line.startswith("pgdrill: ") for line in stderr_lines(proc)), describe(proc)
    return proc, doc["findings"]


def problems(fs):
    return [f for f in fs if f["severity"] != "info"]


def test_least_privilege_findings(workdir, pg):
    cfg = setup_repo(workdir, pg)
    pg.psql("CREATE ROLE bk LOGIN REPLICATION")

    # The harness connects as the superuser postgres: warned, naming the fix.
    proc, fs = findings(cfg)
    assert proc.returncode == 0, describe(proc)  # findings alone never fail check
    role = [f for f in problems(fs) if f["check"] == "role"]
    assert len(role) == 1 and role[0]["severity"] == "warning", fs
    assert "superuser" in role[0]["message"] and "LOGIN REPLICATION" in role[0]["message"], fs
    # As a superuser pg_hba.conf is inspected: the harness's trust lines are loopback only.
    assert not [f for f in fs if f["check"] == "hba"], fs
    # --strict turns a warning into exit 1.
    proc = run_pgdrill("check", "--strict", config=cfg)
    assert proc.returncode == 1, describe(proc)
    assert "superuser" in proc.stdout, describe(proc)

    # A LOGIN REPLICATION role: clean. pg_hba.conf cannot be read by it: said, as info.
    cfg_bk = write_config({CLUSTER: {"repo": os.path.join(workdir, "repo"),
                                     "key-file": os.path.join(workdir, "key"),
                                     **pg.config_lines(), "pg-user": "bk"}},
                          name="bk.conf", directory=workdir)
    proc, fs = findings(cfg_bk)
    assert proc.returncode == 0, describe(proc)
    assert problems(fs) == [], fs
    hba = [f for f in fs if f["check"] == "hba"]
    assert len(hba) == 1 and hba[0]["severity"] == "info" and "could not inspect" in hba[0]["message"], fs

    # The same role with a write grant and CREATEROLE: both warned.
    pg.psql("CREATE TABLE t (g int); GRANT INSERT ON t TO bk; ALTER ROLE bk CREATEROLE")
    _, fs = findings(cfg_bk)
    msgs = [f["message"] for f in problems(fs)]
    assert any("CREATEROLE" in m for m in msgs) and any('may write to 1 table(s) in database "postgres"' in m for m in msgs), fs
    pg.psql("REVOKE INSERT ON t FROM bk; ALTER ROLE bk NOCREATEROLE; GRANT pg_monitor TO bk")
    _, fs = findings(cfg_bk)
    assert [f["check"] for f in problems(fs)] == ["role"] and "pg_monitor" in problems(fs)[0]["message"], fs
    pg.psql("REVOKE pg_monitor FROM bk")

    # A configuration file every user may read: warned, naming the file and the fix.
    os.chmod(cfg_bk, 0o644)
    _, fs = findings(cfg_bk)
    assert len(problems(fs)) == 1, fs
    f = problems(fs)[0]
    assert f["check"] == "file-mode" and f["severity"] == "warning", fs
    assert cfg_bk in f["message"] and "0644" in f["message"] and "chmod o-r" in f["message"], fs
    os.chmod(cfg_bk, 0o600)
    _, fs = findings(cfg_bk)
    assert problems(fs) == [], fs

    # Replication with trust from the network: critical (seen by the superuser).
    with open(os.path.join(pg.data, "pg_hba.conf"), "a") as h:
        h.write("host replication all 0.0.0.0/0 trust\n")
    pg.reload()
    _, fs = findings(cfg)
    hba = [f for f in fs if f["check"] == "hba"]
    assert len(hba) == 1 and hba[0]["severity"] == "critical", fs
    assert "0.0.0.0" in hba[0]["message"] and "scram-sha-256" in hba[0]["message"], fs


def test_capacity_forecast(workdir, pg):
    cfg = setup_repo(workdir, pg)
    # Fewer than two backups: no forecast, and status says why rather than a number.
    backup(cfg)
    st = status_json(cfg)
    assert st["capacity"]["repository_full_days"] is None, st
    assert "fewer than two complete backups" in st["capacity"]["forecast_unknown"], st
    # A growing database: each backup larger than the one before.
    for rows in (20000, 40000):
        time.sleep(1.1)  # distinct end times (whole seconds)
        pg.psql(f"CREATE TABLE IF NOT EXISTS grow (g int, pad text); "
                f"INSERT INTO grow SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {rows}) g")
        backup(cfg)
    names = [push_wal(pg, cfg) for _ in range(3)]
    # Archive times the test chooses: one segment an hour, ending now.
    now = int(time.time())
    for i, name in enumerate(names):
        os.utime(wal_path(workdir, name), (now - 3600 * (2 - i), now - 3600 * (2 - i)))

    st = status_json(cfg)
    cap = st["capacity"]
    # The documented method, last against first: bytes of everything newer than
    # the oldest object, over the time from the oldest to the newest, per day.
    proc = run_pgdrill("list", "--json", config=cfg)
    pts = [(epoch(b["stop_time"]), b["stored_size"]) for b in json.loads(proc.stdout)
           if b["state"] == "complete"]
    assert len(pts) == 3 and len({t for t, _ in pts}) == 3, pts

    def rate(points):
        t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
        return sum(b for t, b in points if t > t0) * 86400 / (t1 - t0)

    wal_dir = os.path.join(workdir, "repo", CLUSTER, "wal")
    wal_pts = [(int(os.stat(os.path.join(d, f)).st_mtime), os.stat(os.path.join(d, f)).st_size)
               for d, _, fs in os.walk(wal_dir) for f in fs]
    assert len(wal_pts) == 3, wal_pts
    b_rate, w_rate = rate(pts), rate(wal_pts)
    # Two segments after the first, over two hours.
    assert w_rate == sum(s for t, s in wal_pts if t > now - 7200) * 86400 / 7200
    assert abs(cap["backup_growth_bytes_per_day"] - b_rate) <= 1e-6 * b_rate, (cap, pts)
    assert abs(cap["wal_bytes_per_day"] - w_rate) <= 1e-6 * w_rate, (cap, wal_pts)
    free = cap["repository_free_bytes"]
    vfs = os.statvfs(os.path.join(workdir, "repo"))
    assert abs(free - vfs.f_bavail * vfs.f_frsize) < 256 * 1024 * 1024, (free, vfs)
    expected_days = free / (b_rate + w_rate)
    assert abs(cap["repository_full_days"] - expected_days) <= 1e-6 * expected_days, cap
    assert cap["drill_dir_free_bytes"] > 0, cap
    assert st["wal"]["lag_bytes"] is not None and st["wal"]["segment_size"] == 16 * 1024 * 1024, st

    # The same numbers as metrics, labelled by cluster.
    proc = run_pgdrill("status", "--prometheus", config=cfg)
    assert proc.returncode == 0, describe(proc)
    metrics = dict(re.findall(r'^(pgdrill_\w+)\{cluster="main"\} (\S+)$', proc.stdout, re.M))
    assert abs(float(metrics["pgdrill_repository_full_days"]) - expected_days) <= 1e-3 + 1e-6 * expected_days
    assert abs(float(metrics["pgdrill_wal_bytes_per_day"]) - w_rate) <= 1e-3 + 1e-6 * w_rate
    assert abs(float(metrics["pgdrill_backup_growth_bytes_per_day"]) - b_rate) <= 1e-3 + 1e-6 * b_rate
    for name in ("pgdrill_repository_free_bytes", "pgdrill_drill_dir_free_bytes",
                 "pgdrill_wal_archive_lag_bytes", "pgdrill_last_backup_timestamp_seconds"):
        assert name in metrics, proc.stdout

    # The forecast against alert-repository-days: it is under one day here.
    assert expected_days < 1
    state, text, perfdata = nagios(cfg, "--alert-drill-age", "off", "--alert-repository-days", "off")
    assert state == "OK", text
    state, text, perfdata = nagios(cfg, "--alert-drill-age", "off", "--alert-repository-days", "2,1")
    assert state == "CRITICAL" and "full in" in text, text
    assert perf(perfdata)["repository_days"][2:4] == ("2", "1"), perfdata

    # Without the database status still works; the lag in bytes is absent and it says why.
    pg.stop()
    st = status_json(cfg)
    assert st["wal"]["lag_bytes"] is None and st["wal"]["lag_unknown"] == "the database is not reachable", st
    assert st["database"]["reachable"] is False, st
    assert st["capacity"]["repository_full_days"] is not None, st
    proc = run_pgdrill("status", "--prometheus", config=cfg)
    assert "pgdrill_wal_archive_lag_bytes{" not in proc.stdout, proc.stdout
    proc = run_pgdrill("status", config=cfg)
    assert proc.returncode == 0 and "database is not reachable" in proc.stdout, describe(proc)


def test_s3_free_space_is_unknown(workdir, s3):
    cfg = write_config({CLUSTER: {**s3.config_lines(), "key-file": os.path.join(workdir, "key")}},
                       directory=workdir)
    proc = run_pgdrill("init", "--generate-key-file", os.path.join(workdir, "key"), config=cfg,
                       env=s3.env)
    assert proc.returncode == 0, describe(proc)
    proc = run_pgdrill("status", "--json", config=cfg, env=s3.env)
    assert proc.returncode == 0, describe(proc)
    cap = json.loads(proc.stdout)["capacity"]
    # S3 has no free space: null and said so, never a made-up number.
    assert cap["repository_free_bytes"] is None and cap["repository_full_days"] is None, cap
    assert "S3" in cap["forecast_unknown"], cap
    proc = run_pgdrill("status", "--prometheus", config=cfg, env=s3.env)
    assert "# TYPE pgdrill_repository_free_bytes gauge" in proc.stdout, proc.stdout
    assert "pgdrill_repository_free_bytes{" not in proc.stdout, proc.stdout
    assert "pgdrill_repository_full_days{" not in proc.stdout, proc.stdout
    proc = run_pgdrill("status", config=cfg, env=s3.env)
    assert "repository unknown (S3)" in proc.stdout, describe(proc)
