"""Integration test harness: throwaway PostgreSQL 15 and S3 (s3rver) on loopback.

Every integration test uses this module; nothing else starts servers.

- PostgreSQL refuses to run as root, so as root every server-side program
  (initdb, pg_ctl, postgres, psql, pgbench) runs as the unprivileged system
  user ``pgdrill-test`` (created on first use), in a temp directory owned by
  it. As any other user, everything runs as that user.
- PostgreSQL listens on a Unix socket in its own directory only (TCP off).
- s3rver (from node_modules, pinned by package-lock.json) listens on
  127.0.0.1 on a free port, in its own process group.
- Invariant: whatever the harness started is stopped and its temp directory
  removed (unless PGDRILL_KEEP_TMP=1) however the test process ends: fixture
  finalizers, atexit, SIGINT/SIGTERM/SIGHUP handlers, and, for SIGKILL (e.g. a
  ctest timeout), a small reaper process that watches the test process and
  cleans up after it from a state file.

Also a command line for scripts/demo:
    harness.py demo-start DIR [--pgbench-scale N] [--owner-pid PID]
    harness.py demo-stop DIR
"""

import atexit
import fcntl
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

try:
    import pytest
except ImportError:  # the demo entry point works without pytest
    pytest = None

SERVER_USER = "pgdrill-test"
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("PGDRILL_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
PG_BIN = os.environ.get("PGDRILL_PG_BIN", "/usr/lib/postgresql/15/bin")
KEEP_TMP = os.environ.get("PGDRILL_KEEP_TMP") == "1"
IS_ROOT = os.geteuid() == 0

# s3rver's built-in account
S3_ACCESS_KEY = "S3RVER"
S3_SECRET_KEY = "S3RVER"
S3_BUCKET = "pgdrill-test"

# Variables from the invoking environment that would change what pgdrill or
# libpq does; run_pgdrill() removes them so tests start from a known state.
# (PG* covers libpq's variables and PGDRILL_CONFIG and PGDRILL_PASSPHRASE.)
_SCRUBBED_ENV = re.compile(r"^(PG[A-Z0-9_]*|AWS_[A-Z0-9_]*|JOURNAL_STREAM)$")


class HarnessError(RuntimeError):
    pass


def pgdrill_bin():
    """The pgdrill binary under test: $PGDRILL_BIN (set by ctest) or build/pgdrill."""
    path = os.environ.get("PGDRILL_BIN") or os.path.join(SOURCE_DIR, "build", "pgdrill")
    if not os.access(path, os.X_OK):
        raise HarnessError(f"pgdrill binary {path!r} not found or not executable; build it "
                           "(cmake --build build) or set PGDRILL_BIN")
    return path


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- server user

def ensure_server_user():
    """As root: the unprivileged user that runs PostgreSQL; created if missing.

    Returns (uid, gid) of the user that server-side programs run as.
    """
    if not IS_ROOT:
        return os.getuid(), os.getgid()
    return ensure_user(SERVER_USER)


def ensure_user(name):
    """As root: a system user (created if missing); returns (uid, gid)."""
    # Parallel test processes may race to create the user: serialize.
    with open("/tmp/.pgdrill-test-useradd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--create-home", "--home-dir",
                            f"/var/lib/{name}", "--shell", "/usr/sbin/nologin",
                            "--comment", "pgdrill integration tests", name],
                           check=True, stdout=subprocess.DEVNULL)
            pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def chown_to_server_user(path):
    """Gives path to the server user (as root); no-op otherwise."""
    if IS_ROOT:
        uid, gid = ensure_server_user()
        os.chown(path, uid, gid)
    return path


def _server_env(home):
    env = {
        "PATH": f"{PG_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }
    if IS_ROOT:
        env["USER"] = env["LOGNAME"] = SERVER_USER
    return env


def run_as_server(cmd, cwd, check=True, timeout=120, input=None, env=None):
    """Runs cmd as the server user (root: setuid to pgdrill-test; else self)."""
    kwargs = {}
    if IS_ROOT:
        uid, gid = ensure_server_user()
        kwargs = {"user": uid, "group": gid, "extra_groups": []}
    full_env = _server_env(cwd)
    if env:
        full_env.update(env)
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, input=input, capture_output=True,
                          text=True, timeout=timeout, stdin=None if input is not None
                          else subprocess.DEVNULL, **kwargs)
    if check and proc.returncode != 0:
        raise HarnessError(f"command failed with exit {proc.returncode}: "
                           f"{shlex.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


# ----------------------------------------------------------------- cleanup

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _stop_postgres(entry):
    """Stops an instance: pg_ctl stop -m immediate, else SIGKILL the postmaster."""
    data = entry["data"]
    if not os.path.exists(os.path.join(data, "postmaster.pid")):
        return
    try:
        run_as_server([os.path.join(entry["pg_bin"], "pg_ctl"), "-D", data, "-m", "immediate",
                       "-w", "-t", "30", "stop"], cwd=entry["home"], check=False, timeout=60)
    except (subprocess.TimeoutExpired, OSError):
        pass
    try:
        with open(os.path.join(data, "postmaster.pid")) as f:
            pid = int(f.readline())
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _kill_group(pgid, grace=3.0):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:  # reap the leader if it is our child: a zombie keeps the group
                os.waitpid(pgid, os.WNOHANG)
            except ChildProcessError:
                pass
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _kill_processes_in(root):
    """SIGKILLs every process whose working directory is under root: what is
    left of an interrupted initdb, pg_ctl, psql, pgbench or pgdrill run (all
    started with their cwd there), so nothing writes while root is removed."""
    root = os.path.realpath(root)
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            try:
                os.kill(int(name), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def _run_cleanup_entry(entry):
    kind = entry["kind"]
    if kind == "postgres":
        _stop_postgres(entry)
    elif kind == "pgroup":
        _kill_group(entry["pgid"])
    elif kind == "dir":
        if os.path.isdir(entry["path"]):
            _kill_processes_in(entry["path"])
        if not entry.get("keep"):
            shutil.rmtree(entry["path"], ignore_errors=True)


class _Session:
    """The per-process root temp dir, the cleanup list and the reaper.

    Cleanup entries are plain data (see _run_cleanup_entry) written to a state
    file too, so the reaper can do the same work if this process is killed.
    """

    def __init__(self):
        self.root = None
        self.entries = {}  # id -> entry, run in reverse order of id
        self.next_id = 0
        self.reaper = None
        self.state_path = None
        self.owner_pid = os.getpid()
        self.handlers_installed = False

    def ensure_root(self):
        if self.root is None:
            ensure_server_user()
            self.root = tempfile.mkdtemp(prefix="pgdrill-it-", dir="/tmp")
            os.chmod(self.root, 0o755)
            chown_to_server_user(self.root)
            self.state_path = os.path.join(self.root, ".harness-cleanup.json")
            self._install_handlers()
            self.register({"kind": "dir", "path": self.root, "keep": KEEP_TMP})
            self._start_reaper()
        return self.root

    def mkdir(self, name):
        """A fresh directory under the root, owned by the server user."""
        path = tempfile.mkdtemp(prefix=name + "-", dir=self.ensure_root())
        os.chmod(path, 0o755)
        return chown_to_server_user(path)

    def register(self, entry):
        self.next_id += 1
        self.entries[self.next_id] = entry
        self._save()
        return self.next_id

    def unregister(self, entry_id):
        if self.entries.pop(entry_id, None) is not None:
            self._save()

    def run(self, entry_id):
        entry = self.entries.get(entry_id)
        if entry is not None:
            _run_cleanup_entry(entry)
            self.unregister(entry_id)

    def _save(self):
        if self.root is None or not os.path.isdir(self.root):
            return
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump([self.entries[k] for k in sorted(self.entries)], f)
        os.replace(tmp, self.state_path)

    def _start_reaper(self):
        # Own session: not hit by the terminal's SIGINT, outlives a SIGKILL of
        # this process, and holds none of our output pipes (ctest waits on them).
        self.reaper = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_reaper", str(self.owner_pid),
             self.state_path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)

    def _install_handlers(self):
        if self.handlers_installed:
            return
        self.handlers_installed = True
        atexit.register(self.cleanup)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        self.cleanup()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def cleanup(self):
        """Runs every cleanup entry, newest first; idempotent."""
        if os.getpid() != self.owner_pid:  # a forked child must not clean up
            return
        for entry_id in sorted(self.entries, reverse=True):
            entry = self.entries.pop(entry_id)
            try:
                _run_cleanup_entry(entry)
            except Exception as e:  # keep going: the rest must still be cleaned
                print(f"harness: cleanup of {entry} failed: {e}", file=sys.stderr)
        if self.reaper is not None:
            self.reaper.terminate()
            try:
                self.reaper.wait(5)
            except subprocess.TimeoutExpired:
                self.reaper.kill()
            self.reaper = None
        if self.root and KEEP_TMP:
            print(f"harness: PGDRILL_KEEP_TMP=1: kept {self.root}", file=sys.stderr)
        self.root = None


SESSION = _Session()


def _reaper_main(owner_pid, state_path):
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while _pid_alive(owner_pid):
        time.sleep(0.5)
    try:
        with open(state_path) as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return
    # Children of the dead process (initdb, pg_ctl start) may still be at
    # work and create files or start a server after a first pass: repeat
    # until nothing is left, for a bounded time.
    for _ in range(20):
        for entry in reversed(entries):
            try:
                _run_cleanup_entry(entry)
            except Exception:
                pass
        if not any(os.path.exists(e["path"]) for e in entries
                   if e["kind"] == "dir" and not e.get("keep")):
            return
        time.sleep(1)


# ----------------------------------------------------------------- PostgreSQL

# Settings every instance gets. fsync is off because the machine does not
# crash under a test, and it makes tests faster; a test may override it.
BASE_SETTINGS = {
    "fsync": "off",
    "max_connections": "30",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_timezone": "UTC",
    "timezone": "UTC",
}


def _conf_value(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class Postgres:
    """A throwaway PostgreSQL 15 instance in its own directory.

    Directory layout: <dir>/data (PGDATA), <dir>/sock (the only listener),
    <dir>/postgres.log. `settings` go into postgresql.conf (strings are quoted
    for you: {"wal_level": "replica", "archive_mode": "on"}).
    """

    def __init__(self, name="pg", settings=None, initdb_args=(), pg_bin=None):
        self.pg_bin = pg_bin or PG_BIN
        self.dir = SESSION.mkdir(name)
        self.data = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        self.user = "postgres"  # the database superuser, whoever runs the server
        self.settings = dict(BASE_SETTINGS)
        self.settings.update(settings or {})
        self.initdb_args = list(initdb_args)
        self._cleanup_id = None
        os.mkdir(self.sockdir, 0o755)
        chown_to_server_user(self.sockdir)

    def bin(self, tool):
        return os.path.join(self.pg_bin, tool)

    # -- lifecycle

    def init(self):
        run_as_server([self.bin("initdb"), "-D", self.data, "--auth=trust", "-U", self.user,
                       "--data-checksums", "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8",
                       *self.initdb_args], cwd=self.dir)
        self._write_settings()
        return self

    def _write_settings(self):
        lines = ["", "# harness.py"]
        base = {"listen_addresses": "", "port": self.port,
                "unix_socket_directories": self.sockdir}
        for key, value in {**base, **self.settings}.items():
            lines.append(f"{key} = {_conf_value(value)}")
        path = os.path.join(self.data, "postgresql.conf")
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")

    def set(self, **settings):
        """Changes settings in postgresql.conf (underscores as in the GUC names);
        takes effect at the next restart() or reload()."""
        self.settings.update(settings)
        self._write_settings()  # later lines win in postgresql.conf

    def start(self):
        if self._cleanup_id is None:
            self._cleanup_id = SESSION.register({
                "kind": "postgres", "data": self.data, "pg_bin": self.pg_bin, "home": self.dir})
        proc = run_as_server([self.bin("pg_ctl"), "-D", self.data, "-l", self.log_path, "-w",
                              "-t", "60", "start"], cwd=self.dir, check=False, timeout=90)
        if proc.returncode != 0:
            raise HarnessError(f"PostgreSQL did not start (pg_ctl exit {proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}\nlog:\n{tail(self.log_path)}")
        return self

    def stop(self, mode="fast"):
        """Stops the server (mode: smart, fast, immediate); no-op when stopped."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            run_as_server([self.bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", "60",
                           "stop"], cwd=self.dir, timeout=90)
        if self._cleanup_id is not None:
            SESSION.unregister(self._cleanup_id)
            self._cleanup_id = None

    def restart(self):
        self.stop()
        return self.start()

    def reload(self):
        run_as_server([self.bin("pg_ctl"), "-D", self.data, "reload"], cwd=self.dir)

    def is_running(self):
        proc = run_as_server([self.bin("pg_ctl"), "-D", self.data, "status"], cwd=self.dir,
                             check=False)
        return proc.returncode == 0

    def destroy(self):
        """Stops immediately and removes the directory (unless PGDRILL_KEEP_TMP=1)."""
        if self._cleanup_id is not None:
            SESSION.run(self._cleanup_id)
            self._cleanup_id = None
        else:
            _stop_postgres({"data": self.data, "pg_bin": self.pg_bin, "home": self.dir})
        if not KEEP_TMP:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients

    @property
    def conninfo(self):
        """libpq connection parameters."""
        return {"host": self.sockdir, "port": self.port, "user": self.user, "dbname": "postgres"}

    def conninfo_string(self, db="postgres"):
        return f"host={self.sockdir} port={self.port} user={self.user} dbname={db}"

    def client_args(self):
        return ["-h", self.sockdir, "-p", str(self.port), "-U", self.user]

    def psql(self, sql, db="postgres", check=True):
        """Runs SQL with psql (unaligned, tuples only, ON_ERROR_STOP); returns
        stdout without its final newline, and raises HarnessError on an error.
        With check=False returns the CompletedProcess instead, error or not."""
        proc = run_as_server([self.bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                              *self.client_args(), "-d", db, "-f", "-"],
                             cwd=self.dir, input=sql, check=check)
        return proc.stdout.rstrip("\n") if check else proc

    def pgbench(self, *args, db="postgres", timeout=300):
        """Runs pgbench with args against db; returns the CompletedProcess."""
        return run_as_server([self.bin("pgbench"), *self.client_args(), *map(str, args), db],
                             cwd=self.dir, timeout=timeout)

    def server_version(self):
        return self.psql("SHOW server_version")

    def config_lines(self):
        """The pgdrill config keys that point at this instance."""
        return {"pg-host": self.sockdir, "pg-port": str(self.port), "pg-user": self.user}


# ----------------------------------------------------------------- S3 (s3rver)

class S3Server:
    """s3rver 3.7.1 on 127.0.0.1:<free port>, with bucket `pgdrill-test`."""

    def __init__(self, bucket=S3_BUCKET, name="s3", tls=None):
        """tls: (key_path, cert_path) to serve HTTPS instead of HTTP."""
        self.bucket = bucket
        self.tls = tls
        self.dir = SESSION.mkdir(name)
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "s3rver.log")
        self.port = None
        self.proc = None
        self._cleanup_id = None

    @property
    def endpoint(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def env(self):
        """Credentials for pgdrill (s3rver's built-in account)."""
        return {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}

    def config_lines(self, prefix="ci"):
        return {"repo": f"s3://{self.bucket}/{prefix}", "s3-endpoint": self.endpoint,
                "s3-uri-style": "path", "s3-region": "us-east-1"}

    def _accepts(self):
        if self.proc.poll() is not None:
            raise HarnessError(f"s3rver exited with {self.proc.returncode}:\n{tail(self.log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self, timeout=30, port=None):
        """Starts s3rver on port (a free one when None; a restart after a
        kill passes the old one, so the endpoint stays the same)."""
        script = os.path.join(SOURCE_DIR, "node_modules", "s3rver", "bin", "s3rver.js")
        if not os.path.exists(script):
            raise HarnessError(f"{script} is missing: run `npm ci` in {SOURCE_DIR}")
        node = shutil.which("node") or "/usr/bin/node"
        self.port = port or free_port()
        env = dict(os.environ)
        env["NODE_OPTIONS"] = "--openssl-legacy-provider"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [node, script, "--address", "127.0.0.1", "--port", str(self.port),
                 "--directory", self.data, "--silent", "--configure-bucket", self.bucket,
                 *(["--key", self.tls[0], "--cert", self.tls[1]] if self.tls else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=self.dir,
                start_new_session=True)
        self._cleanup_id = SESSION.register({"kind": "pgroup", "pgid": self.proc.pid})
        wait_for(self._accepts, timeout, f"s3rver on port {self.port}")
        return self

    def signal(self, sig):
        """Sends sig to s3rver (kill -9, kill -STOP / -CONT by a fault test)."""
        os.kill(self.proc.pid, sig)

    def stop(self):
        """Kills s3rver (its whole process group) and waits for it."""
        if self.proc is None:
            return
        _kill_group(self.proc.pid)
        self.proc.wait(10)
        self.proc = None
        if self._cleanup_id is not None:
            SESSION.unregister(self._cleanup_id)
            self._cleanup_id = None

    kill = stop

    def objects(self, prefix=""):
        """Keys stored in the bucket (from s3rver's directory), sorted."""
        root = os.path.join(self.data, self.bucket)
        keys = []
        for dirpath, _, files in os.walk(root):
            for name in files:
                if name.endswith("._S3rver_object"):
                    rel = os.path.relpath(os.path.join(dirpath, name), root)
                    keys.append(rel[: -len("._S3rver_object")])
        return sorted(k for k in keys if k.startswith(prefix))


class FaultProxy:
    """tests/faultproxy.js (mockttp) on 127.0.0.1:<free port> in front of an
    S3Server, started and killed by pid. plan(rules) scripts its faults (see
    the script); faults() returns the "FAULT ..." lines it logged."""

    def __init__(self, upstream, name="faultproxy"):
        self.upstream = upstream
        self.dir = SESSION.mkdir(name)
        self.plan_path = os.path.join(self.dir, "plan.json")
        self.log_path = os.path.join(self.dir, "faultproxy.log")
        self.port = None
        self.proc = None
        self._cleanup_id = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def bucket(self):
        return self.upstream.bucket

    def config_lines(self, prefix="ci"):
        lines = self.upstream.config_lines(prefix)
        lines["s3-endpoint"] = self.endpoint
        return lines

    def plan(self, rules):
        tmp = self.plan_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rules, f)
        os.replace(tmp, self.plan_path)
        time.sleep(0.02)  # a distinct mtime for the next plan

    def faults(self):
        return [line for line in tail(self.log_path, 100000).splitlines()
                if line.startswith("FAULT ")]

    def _accepts(self):
        if self.proc.poll() is not None:
            raise HarnessError(f"faultproxy exited with {self.proc.returncode}:\n"
                               f"{tail(self.log_path)}")
        return "listening" in tail(self.log_path)

    def start(self, timeout=30):
        script = os.path.join(SOURCE_DIR, "tests", "faultproxy.js")
        node = shutil.which("node") or "/usr/bin/node"
        self.port = free_port()
        self.plan([])
        env = dict(os.environ)
        env["NODE_PATH"] = os.path.join(SOURCE_DIR, "node_modules")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [node, script, str(self.port), str(self.upstream.port), self.plan_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=self.dir,
                start_new_session=True)
        self._cleanup_id = SESSION.register({"kind": "pgroup", "pgid": self.proc.pid})
        wait_for(self._accepts, timeout, f"faultproxy on port {self.port}")
        return self

    def stop(self):
        if self.proc is None:
            return
        _kill_group(self.proc.pid)
        self.proc.wait(10)
        self.proc = None
        if self._cleanup_id is not None:
            SESSION.unregister(self._cleanup_id)
            self._cleanup_id = None


# ----------------------------------------------------------------- pgdrill

def write_config(content, name="pgdrill.conf", directory=None, owner=None):
    """Writes a pgdrill config (mode 0600) and returns its path.

    content: the INI text as is (for tests that need exact line numbers), or a
    dict {section: {key: value}} (sections in order, "global" first if present).
    owner="server" gives it to the server user (for commands PostgreSQL runs).
    """
    if isinstance(content, dict):
        out = []
        for section, keys in content.items():
            out.append(f"[{section}]")
            for key, value in keys.items():
                for v in value if isinstance(value, (list, tuple)) else [value]:
                    out.append(f"{key} = {v}")
            out.append("")
        content = "\n".join(out)
    directory = directory or SESSION.mkdir("config")
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.chmod(path, 0o600)
    if owner == "server":
        chown_to_server_user(path)
    return path


def pgdrill_env(env=None):
    """The environment pgdrill runs with: ours minus PG*/AWS_*/PGDRILL_CONFIG/
    JOURNAL_STREAM, plus env (a value of None removes a variable)."""
    full = {k: v for k, v in os.environ.items() if not _SCRUBBED_ENV.match(k)}
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return full


def run_pgdrill(*args, config=None, env=None, check=False, input=None, timeout=300, cwd=None):
    """Runs the pgdrill binary; returns CompletedProcess (text stdout/stderr).

    config: path passed as --config before the command. check: raise unless
    the exit code is 0.
    """
    cmd = [pgdrill_bin()]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += [str(a) for a in args]
    proc = subprocess.run(cmd, env=pgdrill_env(env), input=input, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or SESSION.ensure_root(),
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise HarnessError(f"{shlex.join(cmd)} exited with {proc.returncode}\n"
                           f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


# Log lines may start with an RFC 3339 timestamp (stderr not a terminal).
_TS_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})\s+")


def stderr_lines(proc):
    """Non-empty stderr lines with any leading timestamp removed."""
    return [_TS_PREFIX.sub("", line) for line in proc.stderr.splitlines() if line.strip()]


def error_lines(proc):
    """The `pgdrill: error: ...` lines of stderr (timestamps removed)."""
    return [line for line in stderr_lines(proc) if line.startswith("pgdrill: error:")]


def describe(proc):
    """For assertion messages."""
    return (f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")


# ----------------------------------------------------------------- fixtures

if pytest is not None:

    @pytest.fixture
    def workdir():
        """A fresh directory for this test, owned by the server user."""
        path = SESSION.mkdir("work")
        yield path
        if not KEEP_TMP:
            shutil.rmtree(path, ignore_errors=True)

    @pytest.fixture
    def pg():
        """A started PostgreSQL 15 (defaults: see BASE_SETTINGS)."""
        instance = Postgres().init().start()
        yield instance
        instance.destroy()

    @pytest.fixture
    def pg_factory():
        """Makes instances with settings: pg_factory(settings={...}, start=True)."""
        made = []

        def make(settings=None, start=True, **kwargs):
            instance = Postgres(settings=settings, **kwargs).init()
            made.append(instance)
            return instance.start() if start else instance

        yield make
        for instance in reversed(made):
            instance.destroy()

    @pytest.fixture
    def s3():
        """A started s3rver with the bucket `pgdrill-test`."""
        server = S3Server().start()
        yield server
        server.stop()


# ----------------------------------------------------------------- command line

def _demo_start(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="harness.py demo-start")
    ap.add_argument("dir")
    ap.add_argument("--pgbench-scale", type=int, default=0)
    ap.add_argument("--owner-pid", type=int, default=0,
                    help="stop the instance when this process is gone")
    ap.add_argument("--setting", action="append", default=[],
                    help="NAME=VALUE for postgresql.conf, repeatable")
    a = ap.parse_args(argv)
    os.makedirs(a.dir, exist_ok=True)
    os.chmod(a.dir, 0o755)
    chown_to_server_user(a.dir)
    # The demo owns a.dir and removes it itself; only the server is ours.
    SESSION.root = a.dir
    SESSION.state_path = os.path.join(a.dir, ".harness-cleanup.json")
    settings = {"fsync": "on"}
    settings.update(kv.split("=", 1) for kv in a.setting)
    pg = Postgres(name="pg", settings=settings)
    try:
        pg.init().start()
        if a.pgbench_scale:
            pg.pgbench("-i", "-q", "-s", a.pgbench_scale)
    except BaseException:  # KeyboardInterrupt too
        SESSION.cleanup()
        raise
    if a.owner_pid:
        SESSION.owner_pid = a.owner_pid
        SESSION._start_reaper()
    # Forget it here: demo-stop (or the reaper) stops it.
    SESSION.entries.clear()
    SESSION.reaper = None
    values = {"PG_DIR": pg.dir, "PG_DATA": pg.data, "PG_SOCKDIR": pg.sockdir,
              "PG_PORT": str(pg.port), "PG_USER": pg.user, "PG_LOG": pg.log_path,
              "PG_VERSION": pg.server_version()}
    for key, value in values.items():
        print(f"DEMO_{key}={shlex.quote(value)}")


def _demo_stop(argv):
    directory = argv[0]
    state = os.path.join(directory, ".harness-cleanup.json")
    try:
        with open(state) as f:
            entries = json.load(f)
    except (OSError, ValueError):
        entries = []
    for entry in reversed(entries):
        if entry["kind"] == "postgres":
            entry = dict(entry)
            _stop_postgres(entry)


def main(argv):
    if len(argv) >= 3 and argv[0] == "_reaper":
        _reaper_main(int(argv[1]), argv[2])
        return 0
    if argv and argv[0] == "demo-start":
        _demo_start(argv[1:])
        return 0
    if len(argv) == 2 and argv[0] == "demo-stop":
        _demo_stop(argv[1:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# ----------------------------------------------------------------- restored data directories

def chown_tree_to_server_user(*paths):
    """Gives each path and everything under it to the server user (as root;
    no-op otherwise), as `chown -R` would: symbolic links themselves, not
    their targets (pass a tablespace's directory separately)."""
    if not IS_ROOT:
        return
    uid, gid = ensure_server_user()
    for path in paths:
        os.lchown(path, uid, gid)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), uid, gid)


class ExistingPostgres(Postgres):
    """A PostgreSQL instance on a data directory made elsewhere (a restored
    backup): its own directory for the socket and the log, a free port, and
    the harness settings appended to the data directory's postgresql.conf
    (later lines win over the source cluster's). The data directory must
    belong to the server user before start(); destroy() stops the server and
    removes the instance's own directory, not the data directory."""

    def __init__(self, data, name="restored", settings=None, pg_bin=None):
        super().__init__(name=name, settings=settings, pg_bin=pg_bin)
        self.data = data

    def init(self):
        self._write_settings()
        return self


# ----------------------------------------------------------------- pgdrill as the server user

_SERVER_BINARY = {}  # session root -> path of the copy


def server_binary():
    """A copy of the pgdrill binary that the server user can execute, cached
    per session: PostgreSQL runs archive_command and restore_command as that
    user, who may not reach $PGDRILL_BIN (CI clones into a mktemp -d
    directory, mode 0700, owned by root). Lives in <session root>/bin-*/,
    mode 0755."""
    root = SESSION.ensure_root()
    path = _SERVER_BINARY.get(root)
    if path is None or not os.path.exists(path):
        path = os.path.join(SESSION.mkdir("bin"), "pgdrill")
        shutil.copyfile(pgdrill_bin(), path)
        os.chmod(path, 0o755)
        _SERVER_BINARY[root] = path
    return path


def server_tool(name):
    """Like server_binary() for a test tool built next to pgdrill (pd_storetool)."""
    root = SESSION.ensure_root()
    key = (root, name)
    path = _SERVER_BINARY.get(key)
    if path is None or not os.path.exists(path):
        path = os.path.join(SESSION.mkdir("bin"), name)
        shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(pgdrill_bin())), name), path)
        os.chmod(path, 0o755)
        _SERVER_BINARY[key] = path
    return path


def server_user_kwargs():
    """subprocess keyword arguments that run a child as the server user (as
    root; none otherwise), as run_as_server does for PostgreSQL's programs."""
    if not IS_ROOT:
        return {}
    uid, gid = ensure_server_user()
    return {"user": uid, "group": gid, "extra_groups": []}


def server_pgdrill_env(env=None, home=None):
    """pgdrill_env(env) for a pgdrill run by the server user: HOME, USER and
    LOGNAME are the server user's (as root)."""
    full = pgdrill_env(env)
    if IS_ROOT:
        full.update({"HOME": home or SESSION.ensure_root(), "USER": SERVER_USER,
                     "LOGNAME": SERVER_USER})
    return full


def run_pgdrill_as_server(*args, config=None, env=None, check=False, input=None, timeout=300,
                          cwd=None):
    """run_pgdrill, but server_binary() run by the server user: for a
    repository that PostgreSQL's archive_command writes too, so that every
    file in it belongs to that user (pgdrill creates files 0600 and
    directories 0700), and so that the restore_command `restore` writes
    names a binary the server can run."""
    cmd = [server_binary()]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += [str(a) for a in args]
    cwd = cwd or SESSION.ensure_root()
    proc = subprocess.run(cmd, env=server_pgdrill_env(env, home=cwd), input=input,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          **server_user_kwargs())
    if check and proc.returncode != 0:
        raise HarnessError(f"{shlex.join(cmd)} exited with {proc.returncode}\n"
                           f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
