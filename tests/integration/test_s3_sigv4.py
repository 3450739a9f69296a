"""Signature V4 cross-checked with an independent signer: pgdrill's S3
driver (through tests/tools/pd_storetool) talks to a capturing S3 stand-in
on 127.0.0.1 that records every request; each request is then re-signed by
botocore (Debian's python3-botocore) with the same keys, session token and
time, from the method, URL, body and headers pgdrill sent, and the
Authorization headers must be equal. botocore computes the payload hash
itself, so x-amz-content-sha256 is checked against the body too.

The time is fixed with PGDRILL_TEST_S3_TIME (test-only, see storage/s3.h).
Covered: single PUT with Content-MD5, multipart (CreateMultipartUpload,
UploadPart, CompleteMultipartUpload), HEAD, ranged GET, ListObjectsV2 with a
prefix needing encoding and a continuation token, DELETE and DeleteObjects,
with path-style addressing (the path carries the bucket) and host-style (the
Host header carries the bucket: the endpoint is "localhost", and libcurl
sends <bucket>.localhost to the loopback address)."""

import hashlib
import http.server
import os
import re
import threading
import urllib.parse

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from harness import free_port
from harness import workdir  # noqa: F401  (fixture)
from s3common import s3_config, storetool, write_credentials

TIME = "20261124T020000Z"
ACCESS = "AKIDPGDRILLTEST"
SECRET = "pgdrill/Test+Secret/Key0123456789abcdefghij"
TOKEN = "IQoJb3JpZ2luX2VjEPT//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+pgdrill/token=="
BUCKET = "pgdrill-test"


class Capture(http.server.ThreadingHTTPServer):
    """Records requests; answers like a tiny S3 (objects kept in memory)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", free_port()), Handler)
        self.requests = []
        self.objects = {}
        self.parts = {}
        self.listed_once = False


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _record(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.server.requests.append({"method": self.command, "path": self.path,
                                     "headers": list(self.headers.items()), "body": body})
        url = urllib.parse.urlsplit(self.path)
        key = urllib.parse.unquote(url.path)
        if key.startswith(f"/{BUCKET}/"):
            key = key[len(BUCKET) + 2:]
        elif key == f"/{BUCKET}":
            key = ""
        else:
            key = key[1:]
        return key, urllib.parse.parse_qs(url.query, keep_blank_values=True), body

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        key, _, _ = self._record()
        data = self.server.objects.get(key)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", self.server.etags[key])
        self.send_header("Last-Modified", "Tue, 24 Nov 2026 02:00:00 GMT")
        self.end_headers()

    def do_PUT(self):
        key, q, body = self._record()
        etag = '"' + hashlib.md5(body).hexdigest() + '"'
        if "partNumber" in q:
            self.server.parts[int(q["partNumber"][0])] = body
        else:
            self.server.objects[key] = body
            self.server.etags = getattr(self.server, "etags", {})
            self.server.etags[key] = etag
        self._send(200, headers=[("ETag", etag)])

    def do_POST(self):
        key, q, body = self._record()
        if "uploads" in q:
            self.server.parts = {}
            self._send(200, b"<InitiateMultipartUploadResult><UploadId>up/1+2=</UploadId>"
                            b"</InitiateMultipartUploadResult>")
        elif "uploadId" in q:
            parts = [self.server.parts[n] for n in sorted(self.server.parts)]
            data = b"".join(parts)
            md5s = b"".join(hashlib.md5(p).digest() for p in parts)
            self.server.objects[key] = data
            self.server.etags = getattr(self.server, "etags", {})
            self.server.etags[key] = f'"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"'
            self._send(200, b"<CompleteMultipartUploadResult><Key>k</Key>"
                            b"</CompleteMultipartUploadResult>")
        elif "delete" in q:
            for k in re.findall(rb"<Key>(.*?)</Key>", body):
                self.server.objects.pop(k.decode(), None)
            self._send(200, b"<DeleteResult></DeleteResult>")
        else:
            self._send(400)

    def do_GET(self):
        key, q, _ = self._record()
        if "list-type" in q:
            prefix = q.get("prefix", [""])[0]
            keys = sorted(k for k in self.server.objects if k.startswith(prefix))
            # Two pages when there is more than one key, the second after a
            # token that needs encoding.
            if "continuation-token" in q:
                assert q["continuation-token"][0] == "tok/+= en", q
                page, more = keys[1:], False
            else:
                page, more = keys[:1], len(keys) > 1
            xml = "<ListBucketResult>" + "".join(
                f"<Contents><Key>{k}</Key><Size>{len(self.server.objects[k])}</Size>"
                f"<LastModified>2026-11-24T02:00:00.000Z</LastModified></Contents>"
                for k in page)
            xml += f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"
            if more:
                xml += "<NextContinuationToken>tok/+= en</NextContinuationToken>"
            self._send(200, (xml + "</ListBucketResult>").encode())
            return
        data = self.server.objects.get(key)
        if data is None:
            self._send(404)
            return
        m = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        a, b = (int(m.group(1)), int(m.group(2))) if m else (0, len(data) - 1)
        self._send(206, data[a:b + 1], [("Content-Range", f"bytes {a}-{b}/{len(data)}")])

    def do_DELETE(self):
        key, _, _ = self._record()
        self.server.objects.pop(key, None)
        self._send(204)


def resign(req, port, host):
    """The Authorization botocore computes for a captured request."""
    auth_hdr = dict((k.lower(), v) for k, v in req["headers"])["authorization"]
    signed = re.search(r"SignedHeaders=([^,]+)", auth_hdr).group(1).split(";")
    # botocore adds the date, token and payload hash itself; host comes
    # from the URL.
    skip = {"host", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
    headers = [(k, v) for k, v in req["headers"] if k.lower() in signed and k.lower() not in skip]
    url = f"http://{host}{req['path']}"
    aws = AWSRequest(method=req["method"], url=url, data=req["body"] or None,
                     headers=dict(headers))
    aws.context["timestamp"] = TIME
    signer = S3SigV4Auth(Credentials(ACCESS, SECRET, TOKEN), "s3", "us-east-1")
    signer._modify_request_before_signing(aws)
    canonical = signer.canonical_request(aws)
    sts = signer.string_to_sign(aws, canonical)
    signature = signer.signature(sts, aws)
    names = signer.signed_headers(signer.headers_to_sign(aws))
    return (f"AWS4-HMAC-SHA256 Credential={ACCESS}/{TIME[:8]}/us-east-1/s3/aws4_request, "
            f"SignedHeaders={names}, Signature={signature}"), auth_hdr, signed


def exercise(cfg):
    env = {"PGDRILL_TEST_S3_TIME": TIME}
    odd = "odd dir/a+b=c~d (1)*é.txt"
    assert storetool(cfg, "put", odd, input=b"hello", env=env).returncode == 0
    data = os.urandom(9 * 1024 * 1024)
    proc = storetool(cfg, "put", "big/obj", input=data, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = storetool(cfg, "get", "big/obj", env=env)
    assert proc.returncode == 0 and proc.stdout == data, proc.stderr
    proc = storetool(cfg, "list", "/", env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(line.rsplit(" ", 1)[0] for line in proc.stdout.decode().splitlines()) == \
        sorted(["big/obj", odd]), proc.stdout
    assert storetool(cfg, "rm", odd, env=env).returncode == 0
    assert storetool(cfg, "rmprefix", "big", env=env).returncode == 0


def check(workdir, style):
    server = Capture()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        creds = write_credentials(workdir, access_key=ACCESS, secret=SECRET, token=TOKEN,
                                  name=f"{style}.cred")

        port = server.server_address[1]
        host = f"127.0.0.1:{port}" if style == "path" else f"{BUCKET}.localhost:{port}"

        class Endpoint:
            endpoint = f"http://{'127.0.0.1' if style == 'path' else 'localhost'}:{port}"
            bucket = BUCKET

            def config_lines(self, prefix):
                return {"repo": f"s3://{BUCKET}/sig v4", "s3-endpoint": self.endpoint,
                        "s3-uri-style": style, "s3-region": "us-east-1"}

        cfg = s3_config(workdir, Endpoint(), creds=creds, name=f"{style}.conf")
        exercise(cfg)
    finally:
        server.shutdown()
        server.server_close()
    reqs = server.requests
    methods = {(r["method"], tuple(sorted(urllib.parse.parse_qs(
        urllib.parse.urlsplit(r["path"]).query, keep_blank_values=True)))) for r in reqs}
    # Every kind of request pgdrill sends is here.
    for want in [("PUT", ()), ("PUT", ("partNumber", "uploadId")), ("POST", ("uploads",)),
                 ("POST", ("uploadId",)), ("HEAD", ()), ("GET", ()),
                 ("GET", ("list-type", "prefix")),
                 ("GET", ("continuation-token", "list-type", "prefix")),
                 ("DELETE", ()), ("POST", ("delete",))]:
        assert want in methods, (want, methods)
    for req in reqs:
        headers = {k.lower(): v for k, v in req["headers"]}
        assert headers["host"] == host, headers
        if style == "host":
            assert not req["path"].startswith(f"/{BUCKET}"), req["path"]
        want, got, signed = resign(req, port, host)
        assert got == want, (req["method"], req["path"], got, want)
        for h in ("host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"):
            assert h in signed, (h, signed)
        headers = {k.lower(): v for k, v in req["headers"]}
        assert headers["x-amz-content-sha256"] == hashlib.sha256(req["body"]).hexdigest()
        if req["method"] == "PUT" or "delete" in req["path"]:
            assert "content-md5" in signed
        # The path is the key encoded once as S3 wants (RFC 3986 unreserved kept).
        path = urllib.parse.urlsplit(req["path"]).path
        assert path == urllib.parse.quote(urllib.parse.unquote(path), safe="/-_.~"), path
    # Secrets travel only inside the signature's HMAC (and the token header).
    for req in reqs:
        assert SECRET not in repr(req)


def test_s3_sigv4_matches_botocore_path_style(workdir):
    check(workdir, "path")


def test_s3_sigv4_host_style_puts_the_bucket_in_the_host(workdir):
    check(workdir, "host")
