"""Running unattended: logs under cron, journald and --verbose, and contrib/.

Against the real binary (and a real PostgreSQL 15 where a backup is taken):
- logs: with stderr neither a terminal nor journald (cron; here a pipe, stdin
  /dev/null, no JOURNAL_STREAM) a successful backup and expire print
  nothing at all; a failure prints its error; --verbose, or log-level set in
  the file, brings the info lines back; under journald (JOURNAL_STREAM names
  stderr) info lines come with a syslog priority; --quiet with --verbose
  is a usage error;
- contrib/pgdrill.conf documents every configuration key, loads as shipped
  (init and list run on it) and loads with every commented example line
  uncommented;
- contrib/notify/notify-webhook posts the outcome to an HTTP server and
  contrib/notify/notify-mail speaks SMTP to a mail server, both on
  127.0.0.1, run by pgdrill as notify-command;
- contrib/prometheus/pgdrill-textfile writes status --prometheus into a
  .prom file atomically, readable by node_exporter, and leaves the old file
  in place when status fails;
- contrib/systemd/pgdrill-onfailure mails a failed unit's status and journal;
- every pgdrill command line in the units and the cron file parses.
"""

import http.server
import json
import os
import re
import shlex
import shutil
import socketserver
import stat
import subprocess
import threading

from harness import SOURCE_DIR, describe, pgdrill_bin, pgdrill_env, run_pgdrill, write_config
from harness import pg, workdir  # noqa: F401  (fixtures)

CONTRIB = os.path.join(SOURCE_DIR, "contrib")
LINE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\S+ )?pgdrill: (error|warning|info|debug): ")


def make_repo(workdir, pg=None, name="repo", **keys):
    """An initialised repository; returns its config path."""
    lines = {"repo": os.path.join(workdir, name), "key-file": os.path.join(workdir, f"{name}.key")}
    lines.update(pg.config_lines() if pg is not None else
                 {"pg-host": workdir, "pg-port": "1"})  # no server: connections fail at once
    lines.update({k.replace("_", "-"): v for k, v in keys.items()})
    cfg = write_config({"main": lines}, directory=workdir, name=f"{name}.conf")
    proc = run_pgdrill("init", "--generate-key-file", lines["key-file"], config=cfg)
    assert proc.returncode == 0, describe(proc)
    return cfg


# ---------------------------------------------------------------- logs

def test_cron_gets_nothing_unless_something_is_wrong(pg, workdir):
    cfg = make_repo(workdir, pg, retention_full="1")
    # run_pgdrill: stdin /dev/null, stdout and stderr pipes, no JOURNAL_STREAM.
    for args in (["backup"], ["backup"], ["expire"]):
        proc = run_pgdrill(*args, config=cfg)
        assert proc.returncode == 0, describe(proc)
        assert proc.stderr == "" and proc.stdout == "", describe(proc)
    listed = json.loads(run_pgdrill("list", "--json", config=cfg).stdout)
    assert len(listed) == 1, listed  # expire did remove one: it ran, silently

    # --verbose: one info line per event, with sizes and durations.
    proc = run_pgdrill("--verbose", "backup", config=cfg)
    assert proc.returncode == 0, describe(proc)
    lines = proc.stderr.splitlines()
    assert lines and all(LINE.match(x) for x in lines), describe(proc)
    assert any(re.search(r"info: backup \S+ complete: .*B, stored .* in ", x) for x in lines), lines
    # ... also after the command, like any option.
    proc = run_pgdrill("expire", "-v", config=cfg)
    assert proc.returncode == 0 and "info: freed " in proc.stderr, describe(proc)

    # Something wrong: the error line is there, so cron mails it.
    pg.stop()
    proc = run_pgdrill("backup", config=cfg)
    assert proc.returncode == 1, describe(proc)
    lines = proc.stderr.splitlines()
    assert lines and all(LINE.match(x) for x in lines), describe(proc)
    assert any(": error: " in x for x in lines) and not any(": info: " in x for x in lines), lines


def test_log_level_in_the_file_applies_under_cron(workdir):
    cfg = make_repo(workdir, retention_full="1", log_level="info")
    proc = run_pgdrill("expire", config=cfg)
    assert proc.returncode == 0, describe(proc)
    assert "pgdrill: info: nothing to expire" in proc.stderr, describe(proc)
    # The same file with log-level = error: not even the no-retention warning.
    cfg = make_repo(workdir, name="r2", log_level="error")
    proc = run_pgdrill("expire", config=cfg)
    assert proc.returncode == 0 and proc.stderr == "", describe(proc)
    proc = run_pgdrill("expire", config=make_repo(workdir, name="r3"))
    assert proc.returncode == 0, describe(proc)
    assert [x for x in proc.stderr.splitlines() if ": warning: " in x], describe(proc)
    assert ": info: " not in proc.stderr, describe(proc)


def test_journald_gets_info_lines_with_a_priority(workdir):
    cfg = make_repo(workdir, retention_full="1")
    with open(os.path.join(workdir, "journal"), "w+") as err:
        st = os.fstat(err.fileno())
        proc = subprocess.run([pgdrill_bin(), "--config", cfg, "expire"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=err, text=True, timeout=60,
                              env=pgdrill_env({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}))
        err.seek(0)
        text = err.read()
    assert proc.returncode == 0, (proc.returncode, text)
    lines = text.splitlines()
    assert lines and all(x.startswith("<6>pgdrill: info: ") for x in lines), text
    assert "<6>pgdrill: info: nothing to expire: 0 backups kept" in lines, text


def test_quiet_and_verbose_contradict(workdir):
    cfg = make_repo(workdir)
    proc = run_pgdrill("--quiet", "--verbose", "list", config=cfg)
    assert proc.returncode == 2, describe(proc)
    assert "--quiet and --verbose contradict" in proc.stderr, describe(proc)


# ---------------------------------------------------------------- contrib/pgdrill.conf

def config_keys():
    """Every key "pgdrill --help" lists."""
    proc = run_pgdrill("--help")
    assert proc.returncode == 0, describe(proc)
    section = proc.stdout.split("Configuration keys", 1)[1].split("\nExample", 1)[0]
    keys = [m.group(1) for m in re.finditer(r"^  ([a-z0-9-]+) ", section, re.M)]
    assert len(keys) > 30 and "repo" in keys and "alert-repository-days" in keys, keys
    return keys


def example_lines():
    with open(os.path.join(CONTRIB, "pgdrill.conf")) as f:
        return f.read().splitlines()


def test_example_config_documents_every_key():
    text = "\n".join(example_lines())
    missing = [k for k in config_keys() if not re.search(rf"^(# )?{re.escape(k)} = ", text, re.M)]
    assert missing == [], f"contrib/pgdrill.conf lacks {missing}"


def test_example_config_loads_as_shipped_and_uncommented(workdir):
    repo, key = os.path.join(workdir, "repo"), os.path.join(workdir, "main.key")
    shipped = os.path.join(workdir, "shipped.conf")
    shutil.copy(os.path.join(CONTRIB, "pgdrill.conf"), shipped)
    os.chmod(shipped, 0o600)
    proc = run_pgdrill("--repo", repo, "init", "--generate-key-file", key, config=shipped)
    assert proc.returncode == 0, describe(proc)
    proc = run_pgdrill("--repo", repo, "--key-file", key, "list", "--json", config=shipped)
    assert proc.returncode == 0 and json.loads(proc.stdout) == [], describe(proc)

    # Every "# key = value" example uncommented (a single-valued key once:
    # the file shows alternatives) must load too: no stale example value.
    # passphrase-file stays commented: it replaces key-file (both: exit 2).
    keys, seen, out = set(config_keys()) - {"passphrase-file"}, set(), []
    for line in example_lines():
        m = re.match(r"^# ([a-z0-9-]+) = (.*)$", line)
        if m and m.group(1) in keys and (m.group(1) not in seen or m.group(1) == "drill-check"):
            seen.add(m.group(1))
            line = f"{m.group(1)} = {m.group(2)}"
        out.append(line)
    assert len(seen) > 25, seen
    everything = write_config("\n".join(out) + "\n", directory=workdir, name="everything.conf")
    # The uncommented file has S3 settings beside the local repository; list
    # does not use them, and runs only when the whole file loaded.
    proc = run_pgdrill("--repo", repo, "--key-file", key, "list", "--json", config=everything)
    assert proc.returncode == 0, describe(proc)
    # ... and a broken value in it is refused with file, line and key.
    broken = write_config("\n".join(out).replace("compression-level = 3", "compression-level = 30"),
                          directory=workdir, name="broken.conf")
    proc = run_pgdrill("--repo", repo, "--key-file", key, "list", config=broken)
    assert proc.returncode == 2 and "compression-level" in proc.stderr, describe(proc)


# ---------------------------------------------------------------- contrib/notify

class _Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for curl: EHLO, MAIL, RCPT, DATA, QUIT."""
    mails = []

    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        mail = {"rcpt": [], "data": ""}
        self.reply("220 test ESMTP")
        while True:
            line = self.rfile.readline().decode()
            if not line:
                return
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 test")
            elif verb == "MAIL":
                mail["from"] = line.strip()
                self.reply("250 ok")
            elif verb == "RCPT":
                mail["rcpt"].append(line.strip())
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                data = []
                while (part := self.rfile.readline().decode()) not in (".\r\n", ".\n", ""):
                    data.append(part)
                mail["data"] = "".join(data)
                _Smtp.mails.append(mail)
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_notify_webhook_posts_the_outcome(pg, workdir):
    hook = serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook))
    _Hook.received.clear()
    try:
        url = f"http://127.0.0.1:{hook.server_address[1]}/hooks/pgdrill"
        cfg = make_repo(workdir, pg, notify_command=f"{CONTRIB}/notify/notify-webhook {url}")
        proc = run_pgdrill("backup", "--json", config=cfg)
        assert proc.returncode == 0, describe(proc)
        assert "notify-command" not in proc.stderr, describe(proc)
        backup = json.loads(proc.stdout)
        [(path, ctype, doc)] = _Hook.received
        assert path == "/hooks/pgdrill" and ctype == "application/json"
        assert doc["event"] == "backup" and doc["result"] == "success" and doc["exit_code"] == 0
        assert doc["backup_id"] == backup["id"] and doc["report"]["id"] == backup["id"]
        assert doc["cluster"] == "main" and doc["text"].startswith("pgdrill backup OK on "), doc

        # A failure: no report, the error in the text; a receiver that
        # refuses makes a warning, never a different exit status.
        pg.stop()
        proc = run_pgdrill("backup", config=cfg)
        assert proc.returncode == 1, describe(proc)
        doc = _Hook.received[-1][2]
        assert doc["result"] == "failure" and doc["exit_code"] == 1 and doc["report"] is None
        assert "pgdrill backup FAILED" in doc["text"] and doc["backup_id"] is None, doc
    finally:
        hook.shutdown()
        hook.server_close()
    proc = run_pgdrill("backup", config=cfg)  # nobody listens now
    assert proc.returncode == 1, describe(proc)
    assert any("notify-command" in x and ": warning: " in x for x in proc.stderr.splitlines()), \
        describe(proc)


def test_notify_mail_sends_over_smtp(workdir):
    smtp = serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp))
    _Smtp.mails.clear()
    try:
        cfg = make_repo(workdir, retention_full="2",
                        notify_command=f"{CONTRIB}/notify/notify-mail dba@example.com")
        proc = run_pgdrill("expire", config=cfg,
                           env={"PGDRILL_SMTP_URL": f"smtp://127.0.0.1:{smtp.server_address[1]}",
                                "PGDRILL_MAIL_FROM": "pgdrill@db1.example.com"})
        assert proc.returncode == 0 and proc.stderr == "", describe(proc)
    finally:
        smtp.shutdown()
        smtp.server_close()
    [mail] = _Smtp.mails
    assert mail["rcpt"] == ["RCPT TO:<dba@example.com>"], mail
    assert "<pgdrill@db1.example.com>" in mail["from"], mail
    head, body = mail["data"].split("\r\n\r\n", 1) if "\r\n\r\n" in mail["data"] else \
        mail["data"].split("\n\n", 1)
    assert re.search(r"^Subject: \[pgdrill\] expire OK on \S+ \(cluster main\)\r?$", head, re.M), head
    assert "nothing to expire" in body or "expire removed" in body, body
    report = json.loads(body.split("Report:", 1)[1])
    assert report["dry_run"] is False and report["removed_backups"] == 0, report


# ---------------------------------------------------------------- textfile collector

def test_textfile_collector_writes_atomically_and_keeps_the_old_file(workdir):
    cfg = make_repo(workdir)
    outdir = os.path.join(workdir, "textfile")
    os.mkdir(outdir)
    script = os.path.join(CONTRIB, "prometheus", "pgdrill-textfile")
    env = pgdrill_env({"PGDRILL": pgdrill_bin(), "PGDRILL_CONFIG": cfg})
    proc = subprocess.run([script, "main", outdir], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, describe(proc)
    prom = os.path.join(outdir, "pgdrill-main.prom")
    assert os.listdir(outdir) == ["pgdrill-main.prom"]
    assert stat.S_IMODE(os.stat(prom).st_mode) == 0o644
    with open(prom) as f:
        text = f.read()
    assert 'pgdrill_backups{cluster="main"} 0\n' in text, text
    assert "# TYPE pgdrill_last_drill_success gauge" in text, text

    # status fails (a configuration file that is not there): the old file
    # stays as it was, no temporary file is left, the exit status says so.
    env["PGDRILL_CONFIG"] = os.path.join(workdir, "missing.conf")
    proc = subprocess.run([script, "main", outdir], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2, describe(proc)
    assert os.listdir(outdir) == ["pgdrill-main.prom"]
    with open(prom) as f:
        assert f.read() == text


# ---------------------------------------------------------------- OnFailure= mail

def test_onfailure_mails_status_and_journal(workdir):
    """pgdrill-failure@.service's script, with stand-ins for systemctl and
    journalctl (no systemd runs here), against a mail server on 127.0.0.1."""
    stubs = os.path.join(workdir, "stubs")
    os.mkdir(stubs)
    for name, text in (("systemctl", "x pgdrill-backup.service - pgdrill nightly backup\n"
                                     "   Active: failed (Result: exit-code)"),
                       ("journalctl", "2026-12-07T01:31:02+00:00 db1 pgdrill[42]: <3>pgdrill: "
                                      "error: could not connect to the server")):
        path = os.path.join(stubs, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho \"$0 $*\"\ncat <<'END'\n{text}\nEND\n")
        os.chmod(path, 0o755)
    script = os.path.join(CONTRIB, "systemd", "pgdrill-onfailure")
    smtp = serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp))
    _Smtp.mails.clear()
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", PGDRILL_ALERT_TO="oncall@example.com",
               PGDRILL_SMTP_URL=f"smtp://127.0.0.1:{smtp.server_address[1]}")
    try:
        proc = subprocess.run([script, "pgdrill-backup.service"], env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=60)
    finally:
        smtp.shutdown()
        smtp.server_close()
    assert proc.returncode == 0, describe(proc)
    [mail] = _Smtp.mails
    assert mail["rcpt"] == ["RCPT TO:<oncall@example.com>"], mail
    data = mail["data"]
    assert re.search(r"^Subject: \[pgdrill\] pgdrill-backup\.service failed on \S+\r?$", data, re.M), data
    assert "status --no-pager --lines=0 pgdrill-backup.service" in data, data
    assert "Active: failed" in data and "could not connect to the server" in data, data
    assert "--unit pgdrill-backup.service --lines 40" in data, data

    # No mail server: exit 1 and a line for the journal, so the failure shows.
    env["PGDRILL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.server_address[1]}"
    proc = subprocess.run([script, "pgdrill-drill.service"], env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 1, describe(proc)
    assert "could not mail oncall@example.com" in proc.stderr, describe(proc)


# ---------------------------------------------------------------- the command lines

def scheduled_commands():
    """Every pgdrill command line in the systemd units and the cron file."""
    cmds = []
    units = os.path.join(CONTRIB, "systemd")
    for name in sorted(os.listdir(units)):
        with open(os.path.join(units, name)) as f:
            for line in f:
                if line.startswith("ExecStart=/usr/bin/pgdrill "):
                    words = shlex.split(line[len("ExecStart="):])
                    cmds.append((name, [w.replace("%d", "/run/credentials/x") for w in words[1:]]))
    with open(os.path.join(CONTRIB, "cron", "pgdrill")) as f:
        for line in f:
            if line.startswith("#") or not line.strip() or re.match(r"^[A-Z]+=", line):
                continue
            command = line.split(None, 6)[6]  # five time fields, the user, the command
            for part in command.split("&&"):
                words = [w for w in shlex.split(part) if not w.startswith(">")]
                if words and words[0] == "pgdrill":
                    cmds.append(("cron/pgdrill", words[1:]))
    return cmds


def test_scheduled_command_lines_parse():
    """Each command line the units and cron run is one pgdrill accepts:
    with --help at the end, pgdrill checks every option and prints the
    command's help instead of running it (an unknown option is exit 2)."""
    cmds = scheduled_commands()
    assert len(cmds) >= 6, cmds  # backup, expire, drill; in the units and in cron
    for where in ("pgdrill-backup.service", "pgdrill-drill.service", "cron/pgdrill"):
        assert any(w == where for w, _ in cmds), (where, cmds)
    assert {"backup", "expire", "drill"} <= {word for _, args in cmds for word in args}, cmds
    for where, args in cmds:
        proc = run_pgdrill(*args, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith("Usage: pgdrill"), (where, args,
                                                                                     describe(proc))
    # The check can fail: a misspelt option is refused.
    where, args = cmds[0]
    proc = run_pgdrill(*args, "--enforce-rtoo", "--help")
    assert proc.returncode == 2, describe(proc)
