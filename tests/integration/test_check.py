"""`pgdrill check` against a real PostgreSQL 15 and s3rver: the intact case
reports the server version, a reachable endpoint and the verified key; then
each side is broken in turn (s3rver killed, PostgreSQL stopped: exit 1; a
repository never initialised, a missing bucket, a wrong key: exit 2) and
check must say what failed in one error line."""

import json
import os
import re

from harness import describe, error_lines, pg, run_pgdrill, s3, stderr_lines, write_config  # noqa: F401


def check_config(pg, s3, prefix="ci", bucket="pgdrill-test", init=True):
    """The config, with the repository initialised on first use (check opens
    it and verifies the key, as for a directory)."""
    key = os.path.join(s3.dir, f"{prefix}.key")
    config = write_config(
        "[global]\n"
        "log-level = info\n"
        "[main]\n"
        f"repo = s3://{bucket}/{prefix}\n"
        f"s3-endpoint = {s3.endpoint}\n"
        "s3-uri-style = path\n"
        f"key-file = {key}\n"
        f"pg-host = {pg.sockdir}\n"
        f"pg-port = {pg.port}\n"
        "pg-user = postgres\n")
    if init and not os.path.exists(key):
        proc = run_pgdrill("init", "--generate-key-file", key, config=config, env=s3.env)
        assert proc.returncode == 0, describe(proc)
    return config


def run_check(pg, s3, *args):
    return run_pgdrill("check", *args, config=check_config(pg, s3), env=s3.env)


def assert_intact(pg, s3):
    proc = run_check(pg, s3)
    assert proc.returncode == 0, describe(proc)
    return proc


def single_error(proc):
    """Exit 1, exactly one non-empty stderr line, and it is an error."""
    assert proc.returncode == 1, describe(proc)
    assert len(stderr_lines(proc)) == 1, describe(proc)
    errors = error_lines(proc)
    assert len(errors) == 1, describe(proc)
    return errors[0]


def test_check_reports_server_version_and_reachable_endpoint(pg, s3):
    version = pg.server_version()  # e.g. "15.20 (Debian 15.20-0+deb12u1)"
    assert version.startswith("15.")
    proc = assert_intact(pg, s3)
    assert version in proc.stdout, describe(proc)
    assert s3.endpoint in proc.stdout, describe(proc)
    assert "reachable" in proc.stdout, describe(proc)


def test_check_json(pg, s3):
    proc = run_check(pg, s3, "--json")
    assert proc.returncode == 0, describe(proc)
    doc = json.loads(proc.stdout)  # one document, nothing else on stdout
    pgj, repo = doc["postgresql"], doc["repository"]
    assert pgj["ok"] is True
    assert pgj["server_version"] == pg.server_version()
    assert isinstance(pgj["server_version_num"], int)
    assert pgj["server_version_num"] // 10000 == 15
    assert str(pgj["server_version_num"]) == pg.psql("SHOW server_version_num")
    assert repo["ok"] is True
    assert repo["key_verified"] is True and repo["cipher"] == "aes-256-gcm"
    assert repo["kind"] == "s3"
    assert repo["endpoint"] == s3.endpoint
    assert isinstance(repo["http_status"], int) and 100 <= repo["http_status"] <= 599


def test_check_fails_when_s3_is_down(pg, s3):
    assert_intact(pg, s3)
    config = check_config(pg, s3)
    s3.stop()
    proc = run_pgdrill("check", config=config, env=s3.env)
    line = single_error(proc)
    assert f"127.0.0.1:{s3.port}" in line, line
    # PostgreSQL is still fine, and check says so.
    assert pg.server_version() in proc.stdout, describe(proc)


def test_check_fails_when_postgresql_is_down(pg, s3):
    assert_intact(pg, s3)
    pg.stop()
    proc = run_check(pg, s3)
    line = single_error(proc)
    assert pg.sockdir in line or re.search(rf"\b{pg.port}\b", line), line
    assert s3.endpoint in proc.stdout, describe(proc)


def test_check_opens_the_s3_repository(pg, s3):
    assert_intact(pg, s3)
    cases = [
        (check_config(pg, s3, prefix="never", init=False), "has no cluster", "run pgdrill init"),
        (check_config(pg, s3, bucket="nosuchbucket", init=False), 'bucket "nosuchbucket"',
         "does not exist"),
    ]
    # A key that is not the repository's.
    wrong = check_config(pg, s3, prefix="other")
    with open(wrong) as f:
        text = f.read()
    with open(wrong, "w") as f:
        f.write(text.replace("repo = s3://pgdrill-test/other", "repo = s3://pgdrill-test/ci"))
    cases.append((wrong, "wrong key", "s3://pgdrill-test/ci"))
    for config, *needles in cases:
        proc = run_pgdrill("check", config=config, env=s3.env)
        assert proc.returncode == 2, describe(proc)
        errors = error_lines(proc)
        assert len(errors) == 1, describe(proc)
        for n in needles:
            assert n in errors[0], describe(proc)
        assert "repository: FAILED" in proc.stdout, describe(proc)
