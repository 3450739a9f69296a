"""`pgdrill init`, repository keys and `key rotate` through the real binary:
modes whatever the umask, refusing an existing repository or key file, a
wrong key or passphrase failing at once (exit 2), rotation, and no secret in
any output."""

import os
import stat

import pytest

from harness import describe, error_lines, run_pgdrill, write_config  # noqa: F401
from harness import pg, workdir  # noqa: F401  (fixtures)


def config(workdir, pg=None, **keys):
    lines = {"repo": os.path.join(workdir, "repo")}
    if pg is not None:
        lines.update(pg.config_lines())
    lines.update({k.replace("_", "-"): v for k, v in keys.items()})
    return write_config({"main": lines}, directory=workdir)


def one_error(proc, code, *needles):
    assert proc.returncode == code, describe(proc)
    errors = error_lines(proc)
    assert len(errors) == 1, describe(proc)
    for n in needles:
        assert n in errors[0], describe(proc)
    return errors[0]


def test_init_generates_key_and_private_files(workdir):
    key = os.path.join(workdir, "main.key")
    cfg = config(workdir)
    old = os.umask(0)
    try:
        # --verbose: stderr is a pipe here, which gets only warnings by default.
        proc = run_pgdrill("--verbose", "init", "--generate-key-file", key, config=cfg)
    finally:
        os.umask(old)
    assert proc.returncode == 0, describe(proc)
    assert "initialised repository" in proc.stderr
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    repo_json = os.path.join(workdir, "repo", "main", "repo.json")
    assert stat.S_IMODE(os.stat(repo_json).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(repo_json)).st_mode) == 0o700
    # An existing repository is refused, and no new key file is left behind.
    key2 = os.path.join(workdir, "second.key")
    proc = run_pgdrill("init", "--generate-key-file", key2, config=cfg)
    one_error(proc, 2, "already initialised")
    assert not os.path.exists(key2)


def test_init_never_overwrites_a_key_file(workdir):
    key = os.path.join(workdir, "existing.key")
    with open(key, "wb") as f:
        f.write(b"x" * 32)
    proc = run_pgdrill("init", "--generate-key-file", key, config=config(workdir))
    one_error(proc, 2, key)
    assert open(key, "rb").read() == b"x" * 32
    assert not os.path.exists(os.path.join(workdir, "repo", "main", "repo.json"))


def test_wrong_key_and_loose_key_file(workdir, pg):
    k1 = os.path.join(workdir, "k1")
    k2 = os.path.join(workdir, "k2")
    assert run_pgdrill("init", "--generate-key-file", k1, config=config(workdir)).returncode == 0
    assert run_pgdrill("init", "--generate-key-file", k2,
                       config=config(workdir, repo=os.path.join(workdir, "other"))).returncode == 0
    good = run_pgdrill("check", config=config(workdir, pg, key_file=k1))
    assert good.returncode == 0, describe(good)
    assert "key verified" in good.stdout
    wrong = run_pgdrill("check", config=config(workdir, pg, key_file=k2))
    one_error(wrong, 2, "wrong key for repository")
    os.chmod(k1, 0o644)
    loose = run_pgdrill("check", config=config(workdir, pg, key_file=k1))
    one_error(loose, 2, "chmod 600", k1)


def test_passphrase_from_environment(workdir, pg):
    secret = "tr0ub4dor-and-3-more-words"
    cfg = config(workdir, pg, log_level="debug")
    proc = run_pgdrill("init", config=cfg, env={"PGDRILL_PASSPHRASE": secret})
    assert proc.returncode == 0, describe(proc)
    assert "scrypt" in proc.stderr
    ok = run_pgdrill("check", config=cfg, env={"PGDRILL_PASSPHRASE": secret})
    assert ok.returncode == 0, describe(ok)
    bad = run_pgdrill("check", config=cfg, env={"PGDRILL_PASSPHRASE": secret + "x"})
    one_error(bad, 2, "wrong key")
    for p in (proc, ok, bad):
        assert secret not in p.stdout + p.stderr
    none = run_pgdrill("check", config=cfg)
    one_error(none, 2, "no key")


def test_key_rotate(workdir, pg):
    k1 = os.path.join(workdir, "k1")
    k2 = os.path.join(workdir, "k2")
    assert run_pgdrill("init", "--generate-key-file", k1, config=config(workdir)).returncode == 0
    with open(k2, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(k2, 0o600)
    proc = run_pgdrill("--verbose", "key", "rotate", "--new-key-file", k2,
                       config=config(workdir, key_file=k1))
    assert proc.returncode == 0, describe(proc)
    assert "rotated the master key" in proc.stderr
    old = run_pgdrill("check", config=config(workdir, pg, key_file=k1))
    one_error(old, 2, "wrong key")
    new = run_pgdrill("check", config=config(workdir, pg, key_file=k2))
    assert new.returncode == 0, describe(new)
    # Rotating again to the same key resumes harmlessly.
    again = run_pgdrill("key", "rotate", "--new-key-file", k2, config=config(workdir, key_file=k1))
    assert again.returncode == 0, describe(again)
    bad = run_pgdrill("key", "spin", config=config(workdir, key_file=k1))
    one_error(bad, 2, "spin")
