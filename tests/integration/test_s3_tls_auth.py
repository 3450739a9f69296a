"""S3 over HTTPS with a private CA the test makes with openssl: refused
without s3-ca-file (certificate not trusted, one error line naming the
remedy), accepted with it, and with s3-verify-tls = no. Credentials: a
credentials file readable by others is refused (exit 2), none at all is
exit 2 naming the variables, an access key s3rver does not know is exit 2
("S3 refused the credentials ...", no retry). And at log-level = debug no
command prints the secret key or the session token, whether from the
credentials file or from the environment."""

import os
import secrets
import subprocess

from harness import describe
from harness import pg, s3, workdir  # noqa: F401  (fixtures)
from harness import S3Server, chown_to_server_user
from s3common import init_repo, one_error, pgdrill, s3_config, write_credentials


def make_ca_and_cert(directory):
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=pgdrill test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    for name in ("ca.pem",):
        os.chmod(os.path.join(directory, name), 0o644)
    return tuple(os.path.join(directory, n) for n in ("server.key", "server.pem", "ca.pem"))


def test_s3_https_needs_the_ca(workdir):
    key, cert, ca = make_ca_and_cert(workdir)
    server = S3Server(name="s3tls", tls=(key, cert)).start()
    try:
        assert server.endpoint.startswith("https://")
        cfg = s3_config(workdir, server, name="untrusted.conf")
        proc = pgdrill("init", "--generate-key-file", os.path.join(workdir, "main.key"), cfg=cfg)
        one_error(proc, 1, "s3://pgdrill-test/ci", "set s3-ca-file")
        assert server.objects() == []

        cfg = s3_config(workdir, server, name="trusted.conf", s3_ca_file=ca)
        init_repo(cfg, workdir)
        proc = pgdrill("list", cfg=cfg)
        assert proc.returncode == 0, describe(proc)
        assert "ci/main/repo.json" in server.objects()

        cfg = s3_config(workdir, server, name="noverify.conf", s3_verify_tls="no")
        proc = pgdrill("list", cfg=cfg)
        assert proc.returncode == 0, describe(proc)
    finally:
        server.stop()


def test_s3_credentials_are_checked(s3, workdir):
    loose = write_credentials(workdir, name="loose.cred", mode=0o644)
    cfg = s3_config(workdir, s3, name="loose.conf", creds=loose)
    proc = pgdrill("list", cfg=cfg)
    one_error(proc, 2, "loose.cred", "mode 0644")

    # No file and no environment.
    cfg = s3_config(workdir, s3, name="none.conf", creds=None)
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write("".join(line + "\n" for line in text.splitlines()
                        if not line.startswith("s3-credentials-file")))
    proc = pgdrill("list", cfg=cfg)
    one_error(proc, 2, "no S3 credentials", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

    # s3rver knows only its own access key: another one is refused at once.
    secret = "wrong-secret-" + secrets.token_hex(8)
    bad = write_credentials(workdir, name="bad.cred", access_key="NOSUCHKEY", secret=secret)
    cfg = s3_config(workdir, s3, name="bad.conf", creds=bad)
    proc = pgdrill("init", "--generate-key-file", os.path.join(workdir, "k2.key"), cfg=cfg)
    # (HEAD comes first: its answer has no body, so no S3 error code to name.)
    line = one_error(proc, 2, 'S3 refused the credentials for bucket "pgdrill-test"',
                     "HTTP 403", "check the keys in s3-credentials-file")
    assert secret not in proc.stderr + proc.stdout
    assert "retrying" not in proc.stderr, describe(proc)
    assert line


def test_s3_debug_log_never_shows_secrets(pg, s3, workdir):
    # s3rver checks the access key id only, so any secret and token work.
    secret = "pgdrill-secret-" + secrets.token_hex(12)
    token = "pgdrill-token-" + secrets.token_hex(24)
    creds = write_credentials(workdir, secret=secret, token=token)
    cfg = s3_config(workdir, s3, pg, creds=creds, log_level="debug")
    outputs = []

    def run(*args, code=0, **kwargs):
        proc = pgdrill(*args, cfg=cfg, **kwargs)
        assert proc.returncode == code, describe(proc)
        outputs.append(proc.stdout + proc.stderr)
        return proc

    run("init", "--generate-key-file", os.path.join(workdir, "main.key"))
    backup_id = run("backup", "--json").stdout
    assert "pgdrill: debug: s3:" in outputs[-1]  # debug lines are there to grep
    run("list", "--json")
    run("verify")
    target = os.path.join(workdir, "restored")
    run("restore", "--target-dir", target)
    run("archive-get", "0000000100000099000000FF", os.path.join(workdir, "x"), code=1)

    # The same from the environment, and a refused request.
    env_cfg = s3_config(workdir, s3, pg, name="env.conf", creds=None, log_level="debug")
    with open(env_cfg) as f:
        text = f.read()
    with open(env_cfg, "w") as f:
        f.write("".join(line + "\n" for line in text.splitlines()
                        if not line.startswith("s3-credentials-file")))
    chown_to_server_user(env_cfg)
    env = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_SESSION_TOKEN": token}
    proc = pgdrill("list", cfg=env_cfg, env=env)
    assert proc.returncode == 0, describe(proc)
    outputs.append(proc.stdout + proc.stderr)
    env["AWS_ACCESS_KEY_ID"] = "NOSUCHKEY"
    proc = pgdrill("list", cfg=env_cfg, env=env)
    assert proc.returncode == 2, describe(proc)
    outputs.append(proc.stdout + proc.stderr)

    assert backup_id
    for out in outputs:
        assert secret not in out
        assert token not in out
        assert token[:20] not in out
