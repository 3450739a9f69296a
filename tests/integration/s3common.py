"""Helpers shared by the S3 integration tests (test_s3*.py).

Every pgdrill command runs as the server user (run_pgdrill_as_server), as in
test_pitr.py: PostgreSQL's archive_command and restore_command run pgdrill as
that user, so the config, the key file and the S3 credentials file are that
user's (credentials come from s3-credentials-file, mode 0600, because
archive_command does not inherit the test's environment).
"""

import os
import shlex
import subprocess

from harness import (S3_ACCESS_KEY, ExistingPostgres, HarnessError, chown_to_server_user,
                     chown_tree_to_server_user, describe, error_lines, pgdrill_bin,
                     run_pgdrill_as_server, server_binary, server_pgdrill_env, server_tool,
                     server_user_kwargs, tail, wait_for, write_config)

CLUSTER = "main"
PREFIX = "ci"


def write_credentials(workdir, access_key=S3_ACCESS_KEY, secret="S3RVER", token=None,
                      mode=0o600, name="s3.cred"):
    """An s3-credentials-file owned by the server user."""
    path = os.path.join(workdir, name)
    lines = ["[default]", f"aws_access_key_id = {access_key}",
             f"aws_secret_access_key = {secret}"]
    if token:
        lines.append(f"aws_session_token = {token}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, mode)
    chown_to_server_user(path)
    return path


def s3_config(workdir, s3, pg=None, creds=None, name="pgdrill.conf", prefix=PREFIX, **keys):
    lines = dict(s3.config_lines(prefix))
    lines["key-file"] = os.path.join(workdir, "main.key")
    lines["s3-credentials-file"] = creds or write_credentials(workdir)
    if pg is not None:
        lines.update(pg.config_lines())
    lines.update({k.replace("_", "-"): v for k, v in keys.items()})
    lines = {k: v for k, v in lines.items() if v is not None}
    return write_config({CLUSTER: lines}, directory=workdir, name=name, owner="server")


def pgdrill(*args, cfg, **kwargs):
    return run_pgdrill_as_server(*args, config=cfg, **kwargs)


def init_repo(cfg, workdir):
    proc = pgdrill("init", "--generate-key-file", os.path.join(workdir, "main.key"), cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    return proc


def archive_command(cfg):
    return f"{shlex.quote(server_binary())} --config {shlex.quote(cfg)} archive-push %p"


def one_error(proc, code, *needles):
    assert proc.returncode == code, describe(proc)
    errors = error_lines(proc)
    assert len(errors) == 1, describe(proc)
    for n in needles:
        assert n in errors[0], describe(proc)
    return errors[0]


def storetool(cfg, *args, input=None, env=None, timeout=300):
    """Runs tests/tools/pd_storetool (next to the pgdrill binary) on cfg."""
    tool = server_tool("pd_storetool")
    return subprocess.run([tool, cfg, *map(str, args)], input=input, capture_output=True,
                          timeout=timeout, env=server_pgdrill_env(env),
                          cwd=os.path.dirname(cfg), **server_user_kwargs())


def wal_key(name):
    """The repository key of an archived WAL file."""
    return f"{PREFIX}/{CLUSTER}/wal/{name[:16]}/{name}"


def wait_archived(s3, server, *names, timeout=60):
    def done():
        objs = s3.objects(f"{PREFIX}/{CLUSTER}/wal/")
        return all(any(o.startswith(wal_key(n)) for o in objs) for n in names)

    try:
        wait_for(done, timeout, f"{', '.join(names)} to be archived", interval=0.1)
    except HarnessError as e:
        stats = server.psql("SELECT * FROM pg_stat_archiver", check=False)
        raise AssertionError(f"{e}\npg_stat_archiver: {getattr(stats, 'stdout', stats)}\n"
                             f"log:\n{tail(server.log_path)}") from None


def start_restored(target, name="restored"):
    chown_tree_to_server_user(target)
    server = ExistingPostgres(target, name=name, settings={"archive_mode": "off"}).init()

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
