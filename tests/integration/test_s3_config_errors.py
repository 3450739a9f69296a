"""S3 mistakes a user makes, each a one-line error with the cause and the
remedy, found before any work: a clock off by more than 15 minutes (told
apart from refused credentials even on a HEAD, whose answer has no body),
a credentials file with several profiles (only [default], or the one
AWS_PROFILE names, is used), an endpoint that cannot work (host-style on an
IP address, a path after the host, an unreadable s3-ca-file: exit 2 at
open), HTTPS against a plain-HTTP server (no retries), and a lock file that
root made in /tmp, which the server user can still take."""

import os
import shutil
import stat
import subprocess

import pytest

from harness import IS_ROOT, chown_to_server_user, describe, pgdrill_bin
from harness import s3, workdir  # noqa: F401  (fixtures)
from s3common import init_repo, one_error, pgdrill, s3_config, write_credentials


def write_profiles(workdir, name, profiles):
    """A credentials file with one section per (profile, access key)."""
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        for profile, key in profiles:
            f.write(f"[{profile}]\naws_access_key_id = {key}\n"
                    f"aws_secret_access_key = secret-of-{profile}\n\n")
    os.chmod(path, 0o600)
    chown_to_server_user(path)
    return path


def test_s3_clock_skew_is_named_even_on_head(s3, workdir):
    cfg = s3_config(workdir, s3)
    init_repo(cfg, workdir)
    assert pgdrill("list", cfg=cfg).returncode == 0
    # s3rver refuses a request dated more than 15 minutes off; list starts
    # with a HEAD of repo.json, whose 403 has no body to name the cause.
    proc = pgdrill("list", cfg=cfg, env={"PGDRILL_TEST_S3_TIME": "20250101T000000Z"})
    one_error(proc, 1, "clock skew", "fix the system clock")
    assert "refused the credentials" not in proc.stderr, describe(proc)


def test_s3_credentials_profiles(s3, workdir):
    # [default] holds s3rver's key; a later [prod] a key it does not know.
    creds = write_profiles(workdir, "profiles.cred", [("default", "S3RVER"), ("prod", "NOSUCH")])
    cfg = s3_config(workdir, s3, creds=creds)
    init_repo(cfg, workdir)
    proc = pgdrill("list", cfg=cfg)
    assert proc.returncode == 0, describe(proc)
    proc = pgdrill("list", cfg=cfg, env={"AWS_PROFILE": "prod"})
    one_error(proc, 2, "S3 refused the credentials", "s3-credentials-file")
    proc = pgdrill("list", cfg=cfg, env={"AWS_PROFILE": "staging"})
    one_error(proc, 2, "profile [staging]", "profiles.cred")

    # The other order: [prod] first, [default] last, still [default].
    creds = write_profiles(workdir, "rev.cred", [("prod", "NOSUCH"), ("default", "S3RVER")])
    cfg = s3_config(workdir, s3, creds=creds, name="rev.conf")
    proc = pgdrill("list", cfg=cfg)
    assert proc.returncode == 0, describe(proc)


def test_s3_endpoint_mistakes_are_config_errors(s3, workdir):
    init_repo(s3_config(workdir, s3), workdir)
    cases = [
        ({"s3_uri_style": "host"}, "host-style", "s3-uri-style = path"),
        ({"s3_endpoint": s3.endpoint + "/some/path"}, "it has a path", "the bucket and prefix"),
        ({"s3_ca_file": os.path.join(workdir, "missing-ca.pem")}, "cannot read s3-ca-file",
         "missing-ca.pem"),
    ]
    for i, (keys, *needles) in enumerate(cases):
        cfg = s3_config(workdir, s3, name=f"bad{i}.conf", **keys)
        proc = pgdrill("list", cfg=cfg)
        one_error(proc, 2, *needles)
    # The same endpoint with a trailing slash is fine.
    cfg = s3_config(workdir, s3, name="slash.conf", s3_endpoint=s3.endpoint + "/")
    assert pgdrill("list", cfg=cfg).returncode == 0


def test_s3_https_against_plain_http_fails_at_once(s3, workdir):
    plain = s3.endpoint[len("http://"):]  # host:port without a scheme means HTTPS
    cfg = s3_config(workdir, s3, s3_endpoint=f"https://{plain}")
    proc = pgdrill("list", cfg=cfg)
    one_error(proc, 1, "speaks HTTPS", "http://")
    assert "retrying" not in proc.stderr, describe(proc)


def test_s3_lock_files_root_made_do_not_block_the_server_user(s3, workdir):
    if not IS_ROOT:
        pytest.skip("needs root to make the lock files as another user")
    cfg = s3_config(workdir, s3)
    init_repo(cfg, workdir)
    # Root's own copies of the key and the credentials (each must belong to
    # the user running pgdrill), so root's verify runs for real.
    rootdir = os.path.join(workdir, "root")
    os.mkdir(rootdir, 0o700)
    for name in ("main.key", "s3.cred"):
        shutil.copyfile(os.path.join(workdir, name), os.path.join(rootdir, name))
        os.chmod(os.path.join(rootdir, name), 0o600)
    with open(cfg) as f:
        text = f.read().replace(os.path.join(workdir, "main.key"),
                                os.path.join(rootdir, "main.key"))
    text = text.replace(os.path.join(workdir, "s3.cred"), os.path.join(rootdir, "s3.cred"))
    root_cfg = os.path.join(rootdir, "root.conf")
    with open(root_cfg, "w") as f:
        f.write(text)
    os.chmod(root_cfg, 0o600)
    before = set(os.listdir("/tmp"))
    proc = subprocess.run([pgdrill_bin(), "--config", root_cfg, "verify", "--backup", "all"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, describe(proc)
    made = [n for n in set(os.listdir("/tmp")) - before if n.endswith("-readers.lock")]
    assert made, sorted(set(os.listdir("/tmp")) - before)
    try:
        for name in made:
            st = os.stat(os.path.join("/tmp", name))
            assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o644, (name, st)
        # The server user's expire takes the same lock exclusively.
        proc = pgdrill("expire", cfg=cfg)
        assert proc.returncode == 0, describe(proc)
    finally:
        for name in made:
            os.unlink(os.path.join("/tmp", name))
