#!/usr/bin/env python3
"""An independent reader of pgdrill's stored object format, version 1.

Written from doc/object-format.md only (not from pipeline/object.c), so that
the tests can check pgdrill's writer against the specification rather than
against itself. Section numbers below refer to that document.

Needs Python 3 and Debian's python3-cryptography; zstd through Debian's
python3-zstandard, or else the zstd command-line tool.

Library use:
    read_object(src, dst, identity, cipher="aes-256-gcm", keys=[key])
        src: binary file object (read), dst: binary file object (write) or None.
        Raises CorruptObject (PD_ECORRUPT, exit 3) or UnknownKey (exit 2).

Command line (stdin to stdout, exit 0 / 2 / 3 like pgdrill):
    objreader.py --identity NAME [--cipher aes-256-gcm|none] [--key-file F ...]
"""

import argparse
import hashlib
import hmac
import shutil
import struct
import subprocess
import sys
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

try:
    import zstandard
except ImportError:  # the zstd command-line tool instead
    zstandard = None

# Section 2
MAGIC = b"PGDRILL\0"
VERSION = 1
HEADER_SIZE = 56
MAX_FRAME_SIZE = 4 * 1024 * 1024
TAG_SIZE = 16
COMPRESSION = {0: "none", 1: "zstd"}
CIPHERS = {0: "none", 1: "aes-256-gcm"}
CIPHER_CODES = {name: code for code, name in CIPHERS.items()}
LAST_FLAG = 0x80000000
# Section 4.2
OBJECT_KEY_INFO = b"pgdrill object key v1"
# Section 6
ZSTD_MAX_WINDOW = 1 << 24
# Section 8
KEY_SIZE = 32
KEY_ID_LABEL = b"pgdrill key id v1"
KEY_CHECK_LABEL = b"pgdrill key check v1"
WRAP_LABEL = b"pgdrill wrap v1\0"

EXIT_CORRUPT = 3
EXIT_KEY = 2


class ObjectError(Exception):
    exit_code = 1


class CorruptObject(ObjectError):
    """The object is damaged, tampered with, truncated, or not this object."""

    exit_code = EXIT_CORRUPT


class UnsupportedVersion(CorruptObject):
    """A format version this reader does not know (section 7, rule 3)."""


class UnknownKey(ObjectError):
    """No data key with the header's key id (section 7, rule 7)."""

    exit_code = EXIT_KEY


# ---- keys (section 8) ----


def key_id(key):
    """key_id(K) = HMAC-SHA256(K, "pgdrill key id v1")[0:16]."""
    return hmac.new(key, KEY_ID_LABEL, hashlib.sha256).digest()[:16]


def key_check_value(key):
    """HMAC-SHA256(K, "pgdrill key check v1")."""
    return hmac.new(key, KEY_CHECK_LABEL, hashlib.sha256).digest()


def unwrap_key(master, wrapped):
    """Section 8.3: nonce(12) || ct(32) || tag(16) under the master key."""
    if len(wrapped) != 12 + KEY_SIZE + 16:
        raise CorruptObject("a wrapped key is %d bytes, expected 60" % len(wrapped))
    nonce, ct = wrapped[:12], wrapped[12 : 12 + KEY_SIZE]
    ctr = Cipher(algorithms.AES(master), modes.CTR(nonce + b"\0\0\0\2")).decryptor()
    candidate = ctr.update(ct) + ctr.finalize()
    try:
        return AESGCM(master).decrypt(nonce, wrapped[12:], WRAP_LABEL + key_id(candidate))
    except InvalidTag:
        raise CorruptObject("a wrapped data key does not verify under the master key") from None


def object_key(data_key, salt):
    """Section 4.2."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=OBJECT_KEY_INFO).derive(
        data_key
    )


# ---- header (section 2) ----


class Header:
    def __init__(self, raw):
        self.raw = raw
        self.magic = raw[0:8]
        self.version = raw[8]
        self.compression = raw[9]
        self.cipher = raw[10]
        self.reserved = raw[11]
        (self.frame_size,) = struct.unpack(">I", raw[12:16])
        self.key_id = raw[16:32]
        self.salt = raw[32:56]


# ---- payload sinks (section 6) ----


class _PlainSink:
    def __init__(self, dst):
        self.dst = dst

    def write(self, data):
        if self.dst is not None and data:
            self.dst.write(data)

    def finish(self):
        pass


class _ZstdLibSink:
    """python3-zstandard: concatenated frames, window <= 2^24, complete."""

    def __init__(self, dst):
        self.dst = dst
        self.dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self.obj = None  # the zstd frame being decoded, if one is open
        self.any_input = False

    def write(self, data):
        self.any_input = self.any_input or bool(data)
        while data:
            if self.obj is None:
                self.obj = self.dctx.decompressobj()
            try:
                out = self.obj.decompress(data)
            except zstandard.ZstdError as e:
                raise CorruptObject("cannot decompress: zstd: %s" % e) from None
            if out and self.dst is not None:
                self.dst.write(out)
            data = b""
            if self.obj.eof:
                data = self.obj.unused_data
                self.obj = None

    def finish(self):
        if not self.any_input or self.obj is not None:
            raise CorruptObject("cannot decompress: the zstd stream is truncated")


class _ZstdCliSink:
    """The zstd tool: decodes concatenated frames, fails on a truncated one."""

    def __init__(self, dst):
        self.dst = dst
        self.any_input = False
        self.proc = subprocess.Popen(
            [shutil.which("zstd") or "zstd", "-d", "-q", "-c", "--memory=16MB"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stderr = b""
        self.copier = threading.Thread(target=self._copy, daemon=True)
        self.copier.start()

    def _copy(self):
        while True:
            chunk = self.proc.stdout.read(1 << 16)
            if not chunk:
                break
            if self.dst is not None:
                self.dst.write(chunk)

    def write(self, data):
        self.any_input = self.any_input or bool(data)
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:
            self.finish()

    def finish(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.stderr = self.proc.stderr.read()
        rc = self.proc.wait()
        self.copier.join()
        if rc != 0:
            msg = self.stderr.decode(errors="replace").strip().splitlines()
            raise CorruptObject("cannot decompress: zstd: %s" % (msg[-1] if msg else rc))
        if not self.any_input:
            raise CorruptObject("cannot decompress: the zstd stream is truncated")

    def abort(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.copier.join()


# ---- reading (section 7) ----


def _read_exact(src, n):
    """Up to n bytes; fewer only at end of input."""
    parts, have = [], 0
    while have < n:
        chunk = src.read(n - have)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def _resolve_key(keys, wanted):
    for k in keys or ():
        if len(k) == KEY_SIZE and hmac.compare_digest(key_id(k), wanted):
            return k
    raise UnknownKey("the object's data key %s is not among the keys given" % wanted.hex())


def read_object(src, dst, identity, cipher="aes-256-gcm", keys=None):
    """Reads one object from src, writes its plaintext to dst (None: discard).

    cipher is the repository's cipher (name or code); keys the candidate data
    keys (bytes), found by key id. Returns a dict describing the object.
    """
    want_cipher = CIPHER_CODES[cipher] if isinstance(cipher, str) else cipher
    ident = identity.encode() if isinstance(identity, str) else identity
    info = {"frames": 0, "payload_bytes": 0}

    # Rules 1-6
    raw = _read_exact(src, HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise CorruptObject("shorter than its header")
    h = Header(raw)
    if h.magic != MAGIC:
        raise CorruptObject("not a pgdrill object (bad magic)")
    if h.version != VERSION:
        raise UnsupportedVersion(
            "format version %d is not supported (reads %d)" % (h.version, VERSION)
        )
    if h.compression not in COMPRESSION or h.cipher not in CIPHERS or h.reserved != 0:
        raise CorruptObject("the header names an unknown compression or cipher")
    if not 1 <= h.frame_size <= MAX_FRAME_SIZE:
        raise CorruptObject("the header gives a bad frame size")
    if h.cipher != want_cipher:
        raise CorruptObject(
            "it is stored with cipher %s but the repository uses %s"
            % (CIPHERS[h.cipher], CIPHERS.get(want_cipher, want_cipher))
        )
    info.update(
        compression=COMPRESSION[h.compression],
        cipher=CIPHERS[h.cipher],
        frame_size=h.frame_size,
        key_id=h.key_id.hex(),
        salt=h.salt.hex(),
    )

    # Rule 7
    aad = hashlib.sha256(raw + ident).digest()
    aead = None
    if h.cipher == 1:
        aead = AESGCM(object_key(_resolve_key(keys, h.key_id), h.salt))

    if h.compression == 1:
        sink = _ZstdLibSink(dst) if zstandard is not None else _ZstdCliSink(dst)
    else:
        sink = _PlainSink(dst)
    try:
        # Rule 8
        index = 0
        while True:
            if index > 0xFFFFFFFE:  # rule 11
                raise CorruptObject("more than 2^32 - 1 frames")
            word = _read_exact(src, 4)
            if len(word) < 4:
                raise CorruptObject("truncated: no final frame after %d frames" % index)
            (v,) = struct.unpack(">I", word)
            last = bool(v & LAST_FLAG)
            length = v & ~LAST_FLAG
            if length > h.frame_size or (not last and length != h.frame_size):
                raise CorruptObject("frame %d has a bad length" % index)
            rest = _read_exact(src, length + TAG_SIZE)
            if len(rest) < length + TAG_SIZE:
                raise CorruptObject("truncated inside frame %d" % index)
            body, tag = rest[:length], rest[length:]
            nonce = h.salt[:7] + struct.pack(">I", index) + (b"\1" if last else b"\0")
            failed = CorruptObject(
                "frame %d failed verification (damaged, reordered, dropped, or not this "
                "object's)" % index
            )
            if aead is not None:
                try:
                    chunk = aead.decrypt(nonce, rest, aad)
                except InvalidTag:
                    raise failed from None
            else:
                want = hashlib.sha256(aad + nonce + struct.pack(">I", length) + body).digest()
                if not hmac.compare_digest(want[:TAG_SIZE], tag):
                    raise failed
                chunk = body
            sink.write(chunk)  # only after the tag verified
            info["payload_bytes"] += length
            index += 1
            if last:
                break
        info["frames"] = index
        # Rule 9
        if src.read(1):
            raise CorruptObject("data follows the final frame")
        # Rule 10
        sink.finish()
    except BaseException:
        if isinstance(sink, _ZstdCliSink):
            sink.abort()
        raise
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description="read a pgdrill object (format version 1)")
    p.add_argument("--identity", required=True)
    p.add_argument("--cipher", choices=sorted(CIPHER_CODES), default="aes-256-gcm")
    p.add_argument("--key-file", action="append", default=[], help="32-byte data key file")
    p.add_argument("--info", action="store_true", help="print the header fields to stderr")
    a = p.parse_args(argv)
    keys = []
    for path in a.key_file:
        with open(path, "rb") as f:
            keys.append(f.read())
    try:
        info = read_object(sys.stdin.buffer, sys.stdout.buffer, a.identity, a.cipher, keys)
        sys.stdout.buffer.flush()
    except ObjectError as e:
        sys.stdout.buffer.flush()
        print('objreader: object "%s": %s' % (a.identity, e), file=sys.stderr)
        return e.exit_code
    if a.info:
        print(info, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
