"""The command line and the configuration contract (DESIGN.md "Command line"),
with no server: help, version, usage errors (exit 2), configuration errors
(exit 2 naming the file, the line and the key), commands not built yet (exit 1).

Configuration errors are provoked through `check`, which loads the
configuration before it connects to anything.
"""

import os
import re

import pytest

from harness import describe, run_pgdrill, stderr_lines, workdir, write_config  # noqa: F401

COMMANDS = ["init", "backup", "list", "restore", "verify", "drill", "archive-push", "archive-get",
            "expire", "key", "status", "check"]


def one_error_line(proc, code):
    """Asserts exit `code` and exactly one non-empty stderr line, an error; returns it."""
    assert proc.returncode == code, describe(proc)
    lines = stderr_lines(proc)
    assert len(lines) == 1, describe(proc)
    assert lines[0].startswith("pgdrill: error: "), describe(proc)
    return lines[0]


@pytest.fixture
def repo_dir(workdir):
    path = os.path.join(workdir, "repo")
    os.mkdir(path)
    return path


def valid_lines(repo_dir):
    return ["[global]", "log-level = info", "", "[main]", f"repo = {repo_dir}"]


# ------------------------------------------------------------------ help, version

def test_version():
    proc = run_pgdrill("--version")
    assert proc.returncode == 0, describe(proc)
    assert re.match(r"^pgdrill \d+\.\d+\.\d+\b", proc.stdout), describe(proc)


def test_help_lists_every_command_and_the_exit_codes():
    proc = run_pgdrill("--help")
    assert proc.returncode == 0, describe(proc)
    for command in COMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\b", proc.stdout, re.M), \
            f"{command} missing from --help\n{proc.stdout}"
    assert "Exit codes" in proc.stdout
    for code in "0123":
        assert re.search(rf"^\s+{code}\s", proc.stdout, re.M), f"exit code {code} not explained"


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command):
    proc = run_pgdrill(command, "--help")
    assert proc.returncode == 0, describe(proc)
    assert "Example" in proc.stdout, describe(proc)
    assert command in proc.stdout


# ------------------------------------------------------------------ usage errors

def test_unknown_command():
    line = one_error_line(run_pgdrill("frobnicate"), 2)
    assert "frobnicate" in line and "--help" in line, line


def test_unknown_option(repo_dir):
    config = write_config("\n".join(valid_lines(repo_dir)) + "\n")
    line = one_error_line(run_pgdrill("list", "--frobnicate", config=config), 2)
    assert "--frobnicate" in line, line


def test_expire_without_repository_is_a_configuration_error(repo_dir):
    # Every command is built now; expire, the last one, refuses a directory
    # that holds no repository before it takes any lock.
    config = write_config("\n".join(valid_lines(repo_dir)) + "\n")
    for args in (["expire"], ["expire", "--dry-run"]):
        line = one_error_line(run_pgdrill(*args, config=config), 2)
        assert "pgdrill init" in line, line
    assert os.listdir(repo_dir) == []


@pytest.mark.parametrize("key, value", [("retention-keep-drilled", "maybe"),
                                        ("retention-incomplete-grace", "-1")])
def test_expire_keys_are_validated(repo_dir, key, value):
    config = write_config("\n".join(valid_lines(repo_dir)) + "\n")
    line = one_error_line(run_pgdrill("expire", f"--{key}", value, config=config), 2)
    assert f'"{key}"' in line, line


# ------------------------------------------------------------------ configuration errors

def config_error(lines, *args, env=None):
    """Writes lines as the config, runs `check` (plus args) and returns
    (path, error line) after asserting exit 2 and one stderr line naming the path."""
    path = write_config("\n".join(lines) + "\n")
    proc = run_pgdrill(*(args or ("check",)), config=path, env=env)
    line = one_error_line(proc, 2)
    assert path in line, f"config path not named: {line}"
    return path, line


@pytest.mark.parametrize("key_line, key", [
    ("rep = x", "rep"),                          # unknown key
    ("pg-port = abc", "pg-port"),                # not an integer
    ("pg-port = 70000", "pg-port"),              # out of range
    ("compression = gzip", "compression"),       # not one of zstd, none
    ("s3-verify-tls = maybe", "s3-verify-tls"),  # not a boolean
    ("key-file = key", "key-file"),              # relative path
], ids=["unknown-key", "bad-int", "out-of-range", "bad-enum", "bad-bool", "relative-path"])
def test_bad_key_names_file_line_and_key(repo_dir, key_line, key):
    lines = valid_lines(repo_dir) + ["pg-host = /tmp", key_line]
    _, line = config_error(lines)
    assert f"line {len(lines)}" in line, line
    assert f'"{key}"' in line, line


def test_bad_value_in_global_section(repo_dir):
    lines = ["[global]", "compression = gzip", "", "[main]", f"repo = {repo_dir}"]
    _, line = config_error(lines)
    assert "line 2" in line and '"compression"' in line, line


def test_duplicate_key(repo_dir):
    lines = valid_lines(repo_dir) + ["pg-port = 5432", "pg-port = 5433"]
    _, line = config_error(lines)
    assert f"line {len(lines)}" in line, line
    assert '"pg-port"' in line, line


def test_missing_repo():
    _, line = config_error(["[global]", "log-level = info", "[main]", "pg-port = 5432"])
    assert re.search(r'\brepo\b', line), line


def test_missing_config_file(workdir):
    path = os.path.join(workdir, "no-such.conf")
    line = one_error_line(run_pgdrill("check", config=path), 2)
    assert path in line, line


def test_unreadable_config_file(workdir):
    # A directory cannot be read as a file, even by root (who ignores modes).
    path = os.path.join(workdir, "a-directory.conf")
    os.mkdir(path)
    line = one_error_line(run_pgdrill("check", config=path), 2)
    assert path in line, line


def test_two_clusters_need_cluster(repo_dir):
    _, line = config_error(["[global]", "[alpha]", f"repo = {repo_dir}", "[beta]",
                            f"repo = {repo_dir}"])
    assert "alpha" in line and "beta" in line, line
    assert "--cluster" in line, line


def test_unknown_cluster(repo_dir):
    _, line = config_error(valid_lines(repo_dir), "--cluster", "gamma", "check")
    assert "gamma" in line, line


def test_pgdrill_config_environment_variable(repo_dir):
    path = write_config("\n".join(valid_lines(repo_dir) + ["rep = x"]) + "\n")
    proc = run_pgdrill("check", env={"PGDRILL_CONFIG": path})
    line = one_error_line(proc, 2)
    assert path in line and "line 6" in line and '"rep"' in line, line


def test_config_option_wins_over_environment(repo_dir):
    bad = write_config("\n".join(valid_lines(repo_dir) + ["rep = x"]) + "\n", name="bad.conf")
    worse = write_config("\n".join(valid_lines(repo_dir) + ["pg-port = abc"]) + "\n",
                         name="worse.conf")
    proc = run_pgdrill("check", config=worse, env={"PGDRILL_CONFIG": bad})
    line = one_error_line(proc, 2)
    assert worse in line and '"pg-port"' in line, line


def test_command_line_override_is_validated(repo_dir):
    path = write_config("\n".join(valid_lines(repo_dir)) + "\n")
    line = one_error_line(run_pgdrill("check", "--pg-port", "70000", config=path), 2)
    assert "--pg-port" in line, line


def test_config_error_comes_before_any_connection(repo_dir, workdir):
    # pg-host points at a directory with no server: a connection attempt would
    # be exit 1; the bad key must win with exit 2.
    lines = valid_lines(repo_dir) + [f"pg-host = {workdir}", "compression = gzip"]
    _, line = config_error(lines, "check", "--json")
    assert '"compression"' in line, line


# ------------------------------------------------------------------ drill usage

@pytest.mark.parametrize("args,needle", [
    (["--pick", "newest"], "bad --pick \"newest\""),
    (["--pick", "latest", "--backup", "20260101T000000Z"], "--backup or --pick, not both"),
    (["--target", "soon"], "bad --target \"soon\""),
    (["--target", "immediate", "--target-lsn", "0/1000000"], "at most one of"),
    (["--target-time", "2026-01-01 00:00:00+00", "--target-lsn", "0/1000000"], "at most one of"),
    (["--backup"], "--backup"),
])
def test_drill_usage_errors_come_before_anything(repo_dir, args, needle):
    """Each is exit 2 with one line, even though the repository holds nothing:
    the command line is judged before any repository or server is touched."""
    config = write_config("\n".join(valid_lines(repo_dir)) + "\n")
    line = one_error_line(run_pgdrill("drill", *args, config=config), 2)
    assert needle in line, line
    assert os.listdir(repo_dir) == []
