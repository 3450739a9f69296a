"""notify-command through the real binary against a real PostgreSQL 15.

A notifier script records its environment, its stdin and its arguments.
Then: a committed backup reports success with the manifest on stdin; a
backup of a stopped server reports failure with pgdrill's own error line;
notify-on = failure skips a success; a drill with no backup to restore
reports a drill failure; a notifier that fails or hangs is logged and
killed, and pgdrill's exit status stays its own; secrets in pgdrill's
environment never reach the notifier."""

import json
import os
import stat
import textwrap

from harness import describe, run_pgdrill, stderr_lines, write_config
from harness import pg, workdir  # noqa: F401  (fixtures)

RECORDER = textwrap.dedent("""\
    #!/usr/bin/env python3
    import json, os, sys
    out = sys.argv[1]
    doc = {"argv": sys.argv[1:], "stdin": sys.stdin.read(),
           "env": {k: v for k, v in os.environ.items()
                   if k.startswith("PGDRILL_") or k in ("AWS_SECRET_ACCESS_KEY", "PGPASSWORD",
                                                        "AWS_SESSION_TOKEN", "KEEP_ME")}}
    with open(out, "a") as f:
        f.write(json.dumps(doc) + "\\n")
    """)


def script(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, stat.S_IRWXU)
    return path


def make_repo(workdir, pg, **keys):
    """An initialised repository whose config runs the recorder into calls.jsonl."""
    calls = os.path.join(workdir, "calls.jsonl")
    recorder = script(workdir, "recorder", RECORDER)
    lines = {"repo": os.path.join(workdir, "repo"), **pg.config_lines(),
             "notify-command": f"{recorder} {calls} extra-arg", **keys}
    name = os.path.basename(lines["repo"])
    lines["key-file"] = os.path.join(workdir, f"{name}.key")
    cfg = write_config({"main": lines}, directory=workdir, name=f"{name}.conf")
    proc = run_pgdrill("init", "--generate-key-file", lines["key-file"], config=cfg)
    assert proc.returncode == 0, describe(proc)
    return cfg, calls


def recorded(calls):
    if not os.path.exists(calls):
        return []
    with open(calls) as f:
        return [json.loads(line) for line in f]


def test_backup_success_and_failure_reach_the_notifier(pg, workdir):
    cfg, calls = make_repo(workdir, pg)
    secrets = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-aws", "PGPASSWORD": "s3cr3t-pg",
               "AWS_SESSION_TOKEN": "s3cr3t-token", "KEEP_ME": "kept"}
    proc = run_pgdrill("backup", "--json", config=cfg, env=secrets)
    assert proc.returncode == 0, describe(proc)
    manifest = json.loads(proc.stdout)
    [call] = recorded(calls)
    env = call["env"]
    assert call["argv"] == [calls, "extra-arg"]
    assert env["PGDRILL_EVENT"] == "backup"
    assert env["PGDRILL_RESULT"] == "success"
    assert env["PGDRILL_EXIT_CODE"] == "0"
    assert env["PGDRILL_CLUSTER"] == "main"
    assert env["PGDRILL_BACKUP_ID"] == manifest["id"]
    assert "PGDRILL_DRILL_ID" not in env
    assert env["PGDRILL_MESSAGE"].startswith(f"backup {manifest['id']} committed")
    assert env["PGDRILL_HOSTNAME"] == os.uname().nodename
    assert json.loads(call["stdin"])["id"] == manifest["id"]
    # pgdrill's secrets stay with pgdrill; the rest of its environment passes.
    assert env["KEEP_ME"] == "kept"
    for name in ("AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "AWS_SESSION_TOKEN"):
        assert name not in env, call

    pg.stop()
    proc = run_pgdrill("backup", config=cfg)
    assert proc.returncode == 1, describe(proc)
    call = recorded(calls)[1]
    env = call["env"]
    assert env["PGDRILL_RESULT"] == "failure"
    assert env["PGDRILL_EXIT_CODE"] == "1"
    assert "PGDRILL_BACKUP_ID" not in env
    # The message is the error line pgdrill printed, without its timestamp.
    assert env["PGDRILL_MESSAGE"] in proc.stderr, (env, describe(proc))
    assert call["stdin"] == ""


def test_notify_on_failure_skips_success(pg, workdir):
    cfg, calls = make_repo(workdir, pg, **{"notify-on": "failure"})
    proc = run_pgdrill("backup", config=cfg)
    assert proc.returncode == 0, describe(proc)
    assert recorded(calls) == []
    proc = run_pgdrill("drill", "--backup", "20000101T000000Z", config=cfg)
    assert proc.returncode == 2, describe(proc)
    [call] = recorded(calls)
    assert call["env"]["PGDRILL_EVENT"] == "drill"
    assert call["env"]["PGDRILL_RESULT"] == "failure"
    assert call["env"]["PGDRILL_EXIT_CODE"] == "2"
    assert "PGDRILL_DRILL_ID" not in call["env"]
    assert call["env"]["PGDRILL_MESSAGE"] in proc.stderr, (call, describe(proc))


def test_failing_notifier_is_logged_and_changes_nothing(pg, workdir):
    failing = script(workdir, "failing", "#!/bin/sh\necho 'webhook said 503' >&2\nexit 7\n")
    cfg, _ = make_repo(workdir, pg, **{"notify-command": failing})
    proc = run_pgdrill("backup", config=cfg)
    assert proc.returncode == 0, describe(proc)
    [line] = [x for x in stderr_lines(proc) if "notify-command" in x]
    assert "exited with status 7" in line and "webhook said 503" in line, line
    assert "result (exit 0) stands" in line, line
    proc = run_pgdrill("list", "--json", config=cfg)
    assert len(json.loads(proc.stdout)) == 1, describe(proc)

    missing = os.path.join(workdir, "no-such-notifier")
    cfg, _ = make_repo(workdir, pg, **{"notify-command": missing, "repo": os.path.join(workdir, "r2")})
    pg.stop()
    proc = run_pgdrill("backup", config=cfg)
    assert proc.returncode == 1, describe(proc)
    [line] = [x for x in stderr_lines(proc) if "notify-command" in x]
    assert "no such file" in line and "exit 1" in line, line


def test_hanging_notifier_is_killed_at_notify_timeout(pg, workdir):
    pidfile = os.path.join(workdir, "hang.pid")
    hanging = script(workdir, "hanging", f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 600\n")
    cfg, _ = make_repo(workdir, pg, **{"notify-command": hanging, "notify-timeout": "1"})
    proc = run_pgdrill("backup", config=cfg, timeout=60)
    assert proc.returncode == 0, describe(proc)
    [line] = [x for x in stderr_lines(proc) if "notify-command" in x]
    assert "killed" in line, line
    with open(pidfile) as f:
        pid = int(f.read())
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_expire_and_check_reach_the_notifier(pg, workdir):
    cfg, calls = make_repo(workdir, pg, **{"retention-full": "1"})
    for _ in range(2):
        proc = run_pgdrill("backup", "--json", config=cfg)
        assert proc.returncode == 0, describe(proc)
    newest = json.loads(proc.stdout)["id"]
    proc = run_pgdrill("expire", config=cfg)
    assert proc.returncode == 0, describe(proc)
    call = recorded(calls)[-1]
    assert call["env"]["PGDRILL_EVENT"] == "expire"
    assert call["env"]["PGDRILL_RESULT"] == "success"
    assert call["env"]["PGDRILL_MESSAGE"].startswith("expire removed 1 backups"), call
    plan = json.loads(call["stdin"])
    assert [b["id"] for b in plan["backups"] if b["action"] == "keep"] == [newest]

    proc = run_pgdrill("check", config=cfg)
    call = recorded(calls)[-1]
    assert call["env"]["PGDRILL_EVENT"] == "check"
    assert call["env"]["PGDRILL_EXIT_CODE"] == str(proc.returncode), describe(proc)
    assert json.loads(call["stdin"])["cluster"] == "main"
    pg.stop()
    proc = run_pgdrill("check", config=cfg)
    assert proc.returncode == 1, describe(proc)
    call = recorded(calls)[-1]
    assert call["env"]["PGDRILL_RESULT"] == "failure"
    assert "FAILED" in call["env"]["PGDRILL_MESSAGE"], call
    assert json.loads(call["stdin"])["postgresql"]["ok"] is False
    # check --nagios is polled every few minutes by a monitoring system that
    # notifies on its own: it does not run notify-command.
    n = len(recorded(calls))
    proc = run_pgdrill("check", "--nagios", config=cfg)
    assert proc.returncode == 2, describe(proc)
    assert len(recorded(calls)) == n
