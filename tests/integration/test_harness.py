"""The harness itself: servers start, answer, and are cleaned up however the
test process ends (invariant in harness.py's docstring). No pgdrill binary needed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import harness
from harness import pg, s3  # noqa: F401 (fixtures)


def test_postgres_runs_unprivileged_on_a_socket_only(pg):
    assert pg.psql("SHOW server_version_num").startswith("15")
    assert pg.psql("SHOW listen_addresses") == ""
    assert pg.psql("SHOW data_checksums") == "on"
    assert pg.psql("SELECT current_user") == "postgres"
    if harness.IS_ROOT:
        owner = os.stat(pg.data).st_uid
        assert owner != 0
        assert owner == harness.ensure_server_user()[0]
    pg.pgbench("-i", "-q", "-s", "1")
    assert pg.psql("SELECT count(*) FROM pgbench_accounts") == "100000"


def test_postgres_settings_and_restart(pg):
    pg.set(wal_level="replica", archive_mode="on", archive_command="/bin/true")
    pg.restart()
    assert pg.psql("SHOW archive_mode") == "on"
    assert pg.psql("SHOW archive_command") == "/bin/true"
    pg.stop()
    assert not pg.is_running()


def test_s3rver_serves_the_bucket(s3):
    with urllib.request.urlopen(f"{s3.endpoint}/{s3.bucket}?list-type=2", timeout=10) as r:
        assert r.status == 200
        assert f"<Name>{s3.bucket}</Name>" in r.read().decode()
    s3.stop()
    try:
        urllib.request.urlopen(s3.endpoint, timeout=2)
    except OSError:
        pass
    else:
        raise AssertionError("s3rver still answers after stop()")


def test_write_config_is_private():
    path = harness.write_config({"global": {"log-level": "info"}, "main": {"repo": "/x"}})
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as f:
        assert f.read() == "[global]\nlog-level = info\n\n[main]\nrepo = /x\n"


def _child(sig):
    """Runs a Python child that starts servers through the harness, prints
    their state as JSON, then waits; kills it with sig; returns the state."""
    code = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {harness.HERE!r})
        import harness
        pg = harness.Postgres().init().start()
        s3 = harness.S3Server().start()
        with open(pg.data + "/postmaster.pid") as f:
            pgpid = int(f.readline())
        print(json.dumps({{"root": harness.SESSION.root, "pgpid": pgpid,
                           "s3pid": s3.proc.pid}}), flush=True)
        time.sleep(120)
    """)
    env = dict(os.environ, PGDRILL_KEEP_TMP="0")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env=env)
    state = json.loads(child.stdout.readline())
    os.kill(child.pid, sig)
    child.wait(60)
    return state


def _alive(pid):
    return harness._pid_alive(pid)


def _gone(state):
    return (not os.path.exists(state["root"]) and not _alive(state["pgpid"])
            and not _alive(state["s3pid"]))


def _assert_cleaned(state, timeout):
    deadline = time.monotonic() + timeout
    while not _gone(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(state["pgpid"]), "postgres left running"
    assert not _alive(state["s3pid"]), "s3rver left running"
    assert not os.path.exists(state["root"]), "temp dir left behind"


def test_cleanup_on_sigterm():
    _assert_cleaned(_child(signal.SIGTERM), timeout=5)


def test_cleanup_on_sigkill_by_the_reaper():
    _assert_cleaned(_child(signal.SIGKILL), timeout=30)
