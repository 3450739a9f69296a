"""The stored object format (doc/object-format.md) against pgdrill's own code.

pgdrill's writer and reader (through tests/tools/pd_objtool) are checked
against objreader.py, an independent reader written from the document only,
and against a small encoder here, also written from the document:

- round trips: every compression x cipher, sizes around the 1 MiB frame,
  random and compressible data, encoded by pd_objtool and read by both readers;
- the document's test vectors read by both readers, and its key values;
- objects from the independent encoder read by pd_objtool (writer rules that
  pgdrill never exercises itself: empty last frame, 4 MiB frames, zstd edge cases);
- tampering of every kind rejected by both readers, pd_objtool with exit 3.

No servers. Needs python3-cryptography and python3-zstandard (or the zstd tool).
"""

import hashlib
import io
import os
import random
import re
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import objreader  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

SOURCE_DIR = os.environ.get("PGDRILL_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
MIB = 1024 * 1024
SIZES = [0, 1, MIB - 1, MIB, MIB + 1, 3 * MIB + 5]
IDENTITY = "backups/20261124T020000Z/base.tar"


def tools_dir():
    if os.environ.get("PGDRILL_TOOLS_DIR"):
        return os.environ["PGDRILL_TOOLS_DIR"]
    if os.environ.get("PGDRILL_BIN"):
        return os.path.dirname(os.path.abspath(os.environ["PGDRILL_BIN"]))
    return os.path.join(SOURCE_DIR, "build")


OBJTOOL = os.path.join(tools_dir(), "pd_objtool")


@pytest.fixture(scope="module", autouse=True)
def objtool_present():
    assert os.access(OBJTOOL, os.X_OK), (
        "%s not found: build it (cmake --build build --target pd_objtool), "
        "or set PGDRILL_TOOLS_DIR or PGDRILL_BIN" % OBJTOOL
    )


def write_key(path, key):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    k1, k2 = os.urandom(32), os.urandom(32)
    return {
        "key": k1,
        "file": write_key(d / "data.key", k1),
        "other": k2,
        "other_file": write_key(d / "other.key", k2),
        "dir": d,
    }


# ---- helpers ----


def objtool(*args, data=b""):
    return subprocess.run([OBJTOOL, *args], input=data, capture_output=True, timeout=120)


def key_args(cipher, key_file):
    return ["--cipher", cipher] + (["--key-file", key_file] if cipher != "none" else [])


def encode(data, cipher, key_file, compression="zstd", identity=IDENTITY, extra=()):
    p = objtool(
        "encode",
        "--identity",
        identity,
        "--compression",
        compression,
        *key_args(cipher, key_file),
        *extra,
        data=data,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr == b""
    return p.stdout


def tool_decode(obj, cipher, key_file, identity=IDENTITY):
    return objtool("decode", "--identity", identity, *key_args(cipher, key_file), data=obj)


def py_decode(obj, cipher, keys, identity=IDENTITY):
    out = io.BytesIO()
    info = objreader.read_object(io.BytesIO(obj), out, identity, cipher, keys)
    return out.getvalue(), info


def payload(kind, size):
    if kind == "random":
        return random.Random(size).randbytes(size)
    # compressible: text-like lines, not a single repeated byte
    line = b"%08d|tuple %d of relation 16384, xmin %d, some text that repeats\n"
    out, i = [], 0
    total = 0
    while total < size:
        s = line % (i, i * 7919 % 10007, 700 + i // 50)
        out.append(s)
        total += len(s)
        i += 1
    return b"".join(out)[:size]


def split_frames(obj):
    """header, [(lenword, body, tag)], trailing bytes; per section 5."""
    hdr, pos, frames = obj[:56], 56, []
    while pos + 4 <= len(obj):
        (v,) = struct.unpack(">I", obj[pos : pos + 4])
        n = v & 0x7FFFFFFF
        body = obj[pos + 4 : pos + 4 + n]
        frames.append((obj[pos : pos + 4], body, obj[pos + 4 + n : pos + 20 + n]))
        pos += 20 + n
        if v & 0x80000000:
            break
    return hdr, frames, obj[pos:]


def join_frames(hdr, frames, tail=b""):
    return hdr + b"".join(w + b + t for w, b, t in frames) + tail


def encode_spec(
    chunks,
    identity=IDENTITY,
    cipher=0,
    data_key=None,
    compression=0,
    frame_size=None,
    version=1,
    reserved=0,
    key_id=None,
    salt=None,
):
    """An independent writer, from sections 2-5: chunks are the payload's
    frames as given (so tests can break writer rules on purpose)."""
    if frame_size is None:
        frame_size = max([len(c) for c in chunks] + [1])
    if key_id is None:
        key_id = objreader.key_id(data_key) if cipher == 1 else bytes(16)
    salt = salt if salt is not None else os.urandom(24)
    hdr = b"PGDRILL\0" + bytes([version, compression, cipher, reserved])
    hdr += struct.pack(">I", frame_size) + key_id + salt
    aad = hashlib.sha256(hdr + identity.encode()).digest()
    out = [hdr]
    for i, c in enumerate(chunks):
        last = i == len(chunks) - 1
        nonce = salt[:7] + struct.pack(">I", i) + (b"\1" if last else b"\0")
        out.append(struct.pack(">I", len(c) | (0x80000000 if last else 0)))
        if cipher == 1:
            out.append(AESGCM(objreader.object_key(data_key, salt)).encrypt(nonce, c, aad))
        else:
            check = hashlib.sha256(aad + nonce + struct.pack(">I", len(c)) + c).digest()
            out.append(c + check[:16])
    return b"".join(out)


def chunked(p, frame_size):
    return [p[i : i + frame_size] for i in range(0, len(p), frame_size)] or [b""]


def zstd_compress(data, **params):
    import zstandard

    cctx = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters.from_level(3, **params)
        if params
        else None
    )
    c = cctx.compressobj()  # streaming: no content size, like pgdrill
    return c.compress(data) + c.flush()


# The causes both readers name (section 7), to check they agree on why.
CAUSES = ["bad magic", "format version", "unknown compression or cipher", "bad frame size",
          "stored with cipher", "data key", "bad length", "failed verification",
          "shorter than its header", "data follows the final frame", "cannot decompress",
          "truncated"]


def cause(message):
    return next((c for c in CAUSES if c in message), message)


def assert_rejected(obj, cipher, keys, key_file, identity=IDENTITY, code=3, match=None):
    """Both readers refuse obj for the same cause: objreader raises, pd_objtool
    exits code with one error line naming the object."""
    expect = objreader.UnknownKey if code == 2 else objreader.CorruptObject
    with pytest.raises(expect) as e:
        py_decode(obj, cipher, keys, identity)
    p = tool_decode(obj, cipher, key_file, identity)
    err = p.stderr.decode()
    assert p.returncode == code, "pd_objtool exit %d, stderr %r (objreader: %s)" % (
        p.returncode,
        err,
        e.value,
    )
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pd_objtool: error: "), err
    assert ('"%s"' % identity) in err or "cannot decompress" in err, err
    assert cause(err) == cause(str(e.value)), (err, str(e.value))
    if match:
        assert re.search(match, err), err
    return err


def assert_accepted(obj, cipher, keys, key_file, plain, identity=IDENTITY):
    got, info = py_decode(obj, cipher, keys, identity)
    assert got == plain
    p = tool_decode(obj, cipher, key_file, identity)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == plain
    return info


CIPHERS = ["aes-256-gcm", "none"]
COMPRESSIONS = ["zstd", "none"]


# ---- round trips ----


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("kind", ["random", "compressible"])
def test_round_trip(keys, compression, cipher, kind):
    for size in SIZES:
        plain = payload(kind, size)
        obj = encode(plain, cipher, keys["file"], compression)
        hdr, frames, tail = split_frames(obj)
        codes = {"none": 0, "zstd": 1, "aes-256-gcm": 1}
        assert hdr[:12] == b"PGDRILL\0" + bytes([1, codes[compression], codes[cipher], 0])
        assert struct.unpack(">I", hdr[12:16])[0] == MIB
        if cipher == "none":
            assert hdr[16:32] == bytes(16)
        else:
            assert hdr[16:32] == objreader.key_id(keys["key"])
        assert tail == b""
        info = assert_accepted(obj, cipher, [keys["key"]], keys["file"], plain)
        assert info["frames"] == len(frames)
        # Section 5.3: all frames full but the last, which is not empty
        # unless the payload is.
        lengths = [len(b) for _, b, _ in frames]
        assert all(n == MIB for n in lengths[:-1])
        assert 0 < lengths[-1] <= MIB or info["payload_bytes"] == 0
        if compression == "none":
            assert info["payload_bytes"] == size
            assert len(frames) == max(1, -(-size // MIB))
            assert len(obj) == 56 + 20 * len(frames) + size


def test_round_trip_options(keys):
    plain = payload("compressible", 3 * MIB + 5) + payload("random", MIB)
    for extra in (["--level", "19"], ["--level", "1", "--workers", "2"], ["--frame-size", "1"],
                  ["--frame-size", str(4 * MIB)], ["--frame-size", "65537"]):
        if extra == ["--frame-size", "1"]:
            data = plain[:3000]  # one frame per byte
        else:
            data = plain
        for compression in COMPRESSIONS:
            obj = encode(data, "aes-256-gcm", keys["file"], compression, extra=extra)
            assert_accepted(obj, "aes-256-gcm", [keys["key"]], keys["file"], data)


def zstd_frames(p):
    """[(content size or None, frame bytes)] of a zstd stream, per RFC 8878."""
    frames, pos = [], 0
    while pos < len(p):
        assert p[pos : pos + 4] == b"\x28\xb5\x2f\xfd", "not a zstd frame at %d" % pos
        start, fhd = pos, p[pos + 4]
        single, fcs_flag = fhd & 0x20, fhd >> 6
        pos += 5 + (0 if single else 1) + [0, 1, 2, 4][fhd & 3]
        fcs_size = [1 if single else 0, 2, 4, 8][fcs_flag]
        size = int.from_bytes(p[pos : pos + fcs_size], "little") if fcs_size else None
        if fcs_size == 2:
            size += 256
        pos += fcs_size
        while True:
            bh = int.from_bytes(p[pos : pos + 3], "little")
            pos += 3 + (1 if (bh >> 1) & 3 == 1 else bh >> 3)
            if bh & 1:
                break
        pos += 4 if fhd & 4 else 0
        frames.append((size, p[start:pos]))
    return frames


def test_writer_zstd_frames(keys):
    # Section 6: independent frames of 1 MiB of plaintext, each with its
    # content size and no checksum, whatever the worker count; readers of the
    # whole stream (objreader, through python3-zstandard or the zstd tool) and
    # of each frame alone (the zstd tool) get the plaintext back.
    for size in (0, 1, MIB, 3 * MIB + 5):
        plain = payload("compressible", size)
        payloads = set()
        for workers in ("0", "1", "2"):
            obj = encode(plain, "none", None, "zstd", extra=["--workers", workers, "--level", "1"])
            assert_accepted(obj, "none", [], None, plain)
            p = b"".join(body for _, body, _ in split_frames(obj)[1])
            payloads.add(p)
        assert len(payloads) == 1
        frames = zstd_frames(p)
        assert [n for n, _ in frames] == [len(c) for c in chunked(plain, MIB)]
        assert all(not (f[4] & 4) for _, f in frames)
        got = b"".join(
            subprocess.run(["zstd", "-d", "-q", "-c"], input=f, capture_output=True,
                           check=True).stdout
            for _, f in frames
        )
        assert got == plain


def test_salt_is_fresh_per_object(keys):
    a = encode(b"same", "aes-256-gcm", keys["file"])
    b = encode(b"same", "aes-256-gcm", keys["file"])
    assert a[:32] == b[:32] and a[32:56] != b[32:56] and a[56:] != b[56:]


def test_objreader_command_line(keys, tmp_path):
    plain = payload("compressible", MIB + 1)
    obj = encode(plain, "aes-256-gcm", keys["file"])
    cmd = [sys.executable, os.path.join(HERE, "objreader.py"), "--identity", IDENTITY]
    p = subprocess.run(cmd + ["--key-file", keys["file"]], input=obj, capture_output=True)
    assert p.returncode == 0 and p.stdout == plain, p.stderr
    p = subprocess.run(cmd + ["--key-file", keys["file"]], input=obj[:-1], capture_output=True)
    assert p.returncode == 3 and b"truncated" in p.stderr
    p = subprocess.run(cmd + ["--key-file", keys["other_file"]], input=obj, capture_output=True)
    assert p.returncode == 2


# ---- the document's test vectors (section 9) ----


def doc_text():
    with open(os.path.join(SOURCE_DIR, "doc", "object-format.md")) as f:
        return f.read()


def doc_objects():
    """The two "whole object" hex blocks of section 9, in order."""
    found = re.findall(r"The whole object \(\d+ bytes\):\n\n((?:    [0-9a-f]+\n)+)", doc_text())
    return [bytes.fromhex("".join(block.split())) for block in found]


VEC_KEY = bytes(range(32))
VEC_MASTER = bytes(range(0x20, 0x40))
VEC_IDENTITY = "wal/000000010000000000000001"
VEC_PLAIN = b"pgdrill test vector\n"


def test_document_vectors(tmp_path):
    key_file = write_key(tmp_path / "vec.key", VEC_KEY)
    objs = doc_objects()
    assert len(objs) == 2 and all(len(o) == 116 for o in objs)
    for obj, cipher in zip(objs, ["aes-256-gcm", "none"]):
        assert_accepted(obj, cipher, [VEC_KEY], key_file, VEC_PLAIN, VEC_IDENTITY)
        # ...and they are what the encoder here produces from the same inputs.
        again = encode_spec(
            [VEC_PLAIN[:16], VEC_PLAIN[16:]],
            VEC_IDENTITY,
            cipher=1 if cipher != "none" else 0,
            data_key=VEC_KEY,
            salt=bytes(range(0x40, 0x58)),
        )
        assert again == obj
        assert_rejected(obj, cipher, [VEC_KEY], key_file, identity=VEC_IDENTITY + "x")


def test_document_key_values():
    text = doc_text()

    def value(name):
        m = re.search(r"^\s*%s\s*= ([0-9a-f]+)$" % re.escape(name), text, re.M)
        assert m, name
        return bytes.fromhex(m.group(1))

    assert objreader.key_id(VEC_KEY) == value("key_id(D)")
    assert objreader.key_check_value(VEC_KEY) == value("key_check_value(D)")
    assert objreader.key_id(VEC_MASTER) == value("key_id(M)")
    assert objreader.key_check_value(VEC_MASTER) == value("key_check_value(M)")
    assert objreader.object_key(VEC_KEY, bytes(range(0x40, 0x58))) == value("object_key")
    m = re.search(r"wrapped D\s*= ((?:[0-9a-f]+\s+)+)", text)
    wrapped = bytes.fromhex("".join(m.group(1).split()))
    assert len(wrapped) == 60 and wrapped[:12] == value("wrap nonce")
    assert objreader.unwrap_key(VEC_MASTER, wrapped) == VEC_KEY
    with pytest.raises(objreader.CorruptObject):
        objreader.unwrap_key(VEC_KEY, wrapped)
    bad = bytearray(wrapped)
    bad[20] ^= 1
    with pytest.raises(objreader.CorruptObject):
        objreader.unwrap_key(VEC_MASTER, bytes(bad))


# ---- objects from the independent encoder, read by pd_objtool ----


@pytest.mark.parametrize("cipher", CIPHERS)
def test_independent_writer(keys, cipher):
    c = 1 if cipher != "none" else 0
    k = keys["key"]
    plain = payload("random", 300000)
    whole = plain[: 4096 * 70]
    cases = [
        chunked(plain, 4096),
        chunked(plain, 100000),
        chunked(plain, 4 * MIB),  # the largest frame size
        chunked(whole, 4096) + [b""],  # an empty last frame after full ones
        [b""],
    ]
    for chunks in cases:
        obj = encode_spec(chunks, cipher=c, data_key=k, frame_size=len(chunks[0]) or 4096)
        assert_accepted(obj, cipher, [k], keys["file"], b"".join(chunks))
    # frame_size of exactly 4 MiB with small frames is fine, one more is not
    obj = encode_spec([b"abc"], cipher=c, data_key=k, frame_size=4 * MIB)
    assert_accepted(obj, cipher, [k], keys["file"], b"abc")
    for fs in (0, 4 * MIB + 1, 0xFFFFFFFF):
        obj = encode_spec([b"abc"], cipher=c, data_key=k, frame_size=fs)
        assert_rejected(obj, cipher, [k], keys["file"], match="bad frame size")
    # a frame index mistake: a short frame that is not the last
    obj = encode_spec([b"a" * 10, b"b" * 16], cipher=c, data_key=k, frame_size=16)
    assert_rejected(obj, cipher, [k], keys["file"], match="frame 0 has a bad length")
    # unknown version, codes, reserved byte: refused even with valid tags
    err = assert_rejected(encode_spec([b"x"], cipher=c, data_key=k, version=2), cipher, [k],
                          keys["file"], match="format version 2 is not supported")
    assert "upgrade pgdrill" in err
    assert_rejected(encode_spec([b"x"], cipher=c, data_key=k, reserved=1), cipher, [k],
                    keys["file"], match="unknown compression or cipher")
    assert_rejected(encode_spec([b"x"], cipher=c, data_key=k, compression=2), cipher, [k],
                    keys["file"], match="unknown compression or cipher")


def test_independent_writer_unused_key_id():
    # Section 2: with cipher 0 the key id is not checked (but authenticated).
    obj = encode_spec([b"x"], cipher=0, key_id=b"\xff" * 16)
    assert py_decode(obj, "none", [])[0] == b"x"
    p = tool_decode(obj, "none", None)
    assert p.returncode == 0 and p.stdout == b"x"


@pytest.mark.parametrize("cipher", CIPHERS)
def test_independent_writer_zstd(keys, cipher):
    c = 1 if cipher != "none" else 0
    k = keys["key"]
    plain = payload("compressible", 200000)
    z = zstd_compress(plain)

    def obj(p, fs=4096):
        return encode_spec(chunked(p, fs), cipher=c, data_key=k, compression=1, frame_size=fs)

    assert_accepted(obj(z), cipher, [k], keys["file"], plain)
    # concatenated zstd frames are read in order (section 6)
    assert_accepted(obj(z + zstd_compress(b"more")), cipher, [k], keys["file"], plain + b"more")
    # an empty or cut zstd stream, and garbage after it, are corrupt
    assert_rejected(encode_spec([b""], cipher=c, data_key=k, compression=1), cipher, [k],
                    keys["file"], match="truncated")
    assert_rejected(obj(z[:-1]), cipher, [k], keys["file"], match="truncated")
    assert_rejected(obj(z[: len(z) // 2]), cipher, [k], keys["file"], match="truncated")
    assert_rejected(obj(z + b"\0\0\0\0junk"), cipher, [k], keys["file"])
    # a window above 2^24 is refused; 2^24 itself is fine
    big = zstd_compress(plain, window_log=25)
    assert_rejected(obj(big), cipher, [k], keys["file"], match="cannot decompress")
    assert_accepted(obj(zstd_compress(plain, window_log=24)), cipher, [k], keys["file"], plain)


# ---- tampering ----


@pytest.fixture(scope="module")
def objects(keys):
    """Multi-frame objects for every cipher x compression: 4 KiB frames."""
    out = {}
    plain = payload("random", 5 * 4096 + 100)  # random, so zstd keeps 6 frames
    for cipher in CIPHERS:
        for compression in COMPRESSIONS:
            obj = encode(plain, cipher, keys["file"], compression, extra=["--frame-size", "4096"])
            assert len(split_frames(obj)[1]) >= 6
            out[cipher, compression] = obj
    return plain, out


def tamper_cases(obj):
    """(name, damaged object) pairs; every one must be refused."""
    hdr, frames, _ = split_frames(obj)
    n = len(frames)
    cases = []

    def flip(data, pos, bit=1):
        b = bytearray(data)
        b[pos] ^= bit
        return bytes(b)

    for pos in range(56):
        if 16 <= pos < 32:
            continue  # the key id: tested apart, its failure depends on the cipher
        cases.append(("header byte %d" % pos, flip(obj, pos)))
        cases.append(("header byte %d bit 7" % pos, flip(obj, pos, 0x80)))
    offsets = [56]
    for w, b, t in frames:
        offsets.append(offsets[-1] + len(w) + len(b) + len(t))
    for i in (0, 2, n - 1):
        start = offsets[i]
        blen = len(frames[i][1])
        cases.append(("frame %d body first byte" % i, flip(obj, start + 4)))
        cases.append(("frame %d body last byte" % i, flip(obj, start + 4 + blen - 1, 0x80)))
        cases.append(("frame %d tag first byte" % i, flip(obj, start + 4 + blen)))
        cases.append(("frame %d tag last byte" % i, flip(obj, start + 4 + blen + 15)))
        cases.append(("frame %d length low bit" % i, flip(obj, start + 3)))
        cases.append(("frame %d last flag" % i, flip(obj, start, 0x80)))
    for cut in (0, 1, 55, 56, 57, 59, 60, 61, offsets[1] - 1, offsets[1], offsets[2] + 100,
                offsets[n - 1], offsets[n - 1] + 4, len(obj) - 16, len(obj) - 1):
        cases.append(("truncated to %d bytes" % cut, obj[:cut]))
    f = list(frames)
    cases.append(("frame 0 dropped", join_frames(hdr, f[1:])))
    cases.append(("frame 2 dropped", join_frames(hdr, f[:2] + f[3:])))
    cases.append(("last frame dropped", join_frames(hdr, f[:-1])))
    cases.append(("frames 0 and 1 swapped", join_frames(hdr, [f[1], f[0]] + f[2:])))
    cases.append(("frames 2 and 3 swapped", join_frames(hdr, f[:2] + [f[3], f[2]] + f[4:])))
    cases.append(("frames 1 and last swapped", join_frames(hdr, [f[0], f[-1]] + f[2:-1] + [f[1]])))
    cases.append(("frame 1 duplicated", join_frames(hdr, f[:2] + f[1:])))
    cases.append(("last frame duplicated", join_frames(hdr, f + f[-1:])))
    # A middle frame flagged last, the rest cut: a plausible shorter object.
    w, b, t = f[2]
    flagged = struct.pack(">I", struct.unpack(">I", w)[0] | 0x80000000)
    cases.append(("frame 2 made last", join_frames(hdr, f[:2] + [(flagged, b, t)])))
    cases.append(("one byte appended", obj + b"\0"))
    cases.append(("a frame appended", obj + b"".join(f[1])))
    cases.append(("the object appended", obj + obj))
    return cases


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_tamper(keys, objects, cipher, compression):
    plain, objs = objects
    obj = objs[cipher, compression]
    # The intact object first.
    assert_accepted(obj, cipher, [keys["key"]], keys["file"], plain)
    failures = []
    for name, bad in tamper_cases(obj):
        try:
            assert_rejected(bad, cipher, [keys["key"]], keys["file"])
        except (AssertionError, pytest.fail.Exception) as e:
            failures.append("%s: %s" % (name, e))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_tamper_key_id(keys, objects, cipher, compression):
    plain, objs = objects
    obj = objs[cipher, compression]
    for pos in (16, 23, 31):
        bad = bytearray(obj)
        bad[pos] ^= 1
        if cipher == "none":
            # No key: the header is authenticated by the checksum alone.
            assert_rejected(bytes(bad), cipher, [keys["key"]], keys["file"],
                            match="frame 0 failed verification")
        else:
            # The key must be found before any tag can be checked: a damaged
            # key id reads as an unknown key (section 7 rule 7), exit 2.
            assert_rejected(bytes(bad), cipher, [keys["key"]], keys["file"], code=2,
                            match="cannot read object .*data key")


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_wrong_identity(keys, objects, cipher, compression):
    _, objs = objects
    obj = objs[cipher, compression]
    for other in (IDENTITY + "x", IDENTITY[:-1], IDENTITY.upper(), "", " " + IDENTITY,
                  "backups/20261124T020000Z/pg_wal.tar"):
        assert_rejected(obj, cipher, [keys["key"]], keys["file"], identity=other,
                        match="frame 0 failed verification")


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_splice_between_objects(keys, cipher, compression):
    """Same identity, same key, same plaintext: still not interchangeable."""
    plain = payload("random", 5 * 4096 + 100)
    a = encode(plain, cipher, keys["file"], compression, extra=["--frame-size", "4096"])
    b = encode(plain, cipher, keys["file"], compression, extra=["--frame-size", "4096"])
    ha, fa, _ = split_frames(a)
    hb, fb, _ = split_frames(b)
    assert len(fa) == len(fb)
    cases = {
        "header of another object": join_frames(hb, fa),
        "frame 1 of another object": join_frames(ha, fa[:1] + fb[1:2] + fa[2:]),
        "last frame of another object": join_frames(ha, fa[:-1] + fb[-1:]),
    }
    for name, bad in cases.items():
        assert_rejected(bad, cipher, [keys["key"]], keys["file"])


def test_cipher_must_match_repository(keys, objects):
    plain, objs = objects
    for compression in COMPRESSIONS:
        enc = objs["aes-256-gcm", compression]
        clear = objs["none", compression]
        assert_rejected(enc, "none", [], None,
                        match="stored with cipher aes-256-gcm but the repository uses none")
        assert_rejected(clear, "aes-256-gcm", [keys["key"]], keys["file"],
                        match="stored with cipher none but the repository uses aes-256-gcm")
        # Downgrade: the attacker re-stores the plaintext under the same name
        # with cipher none, whose checksums need no key.
        forged = encode(plain, "none", None, compression)
        assert_rejected(forged, "aes-256-gcm", [keys["key"]], keys["file"])


def test_wrong_key(keys, objects):
    _, objs = objects
    obj = objs["aes-256-gcm", "zstd"]
    # The tool names the key it was given, the object another: exit 2.
    with pytest.raises(objreader.UnknownKey):
        py_decode(obj, "aes-256-gcm", [keys["other"]])
    p = tool_decode(obj, "aes-256-gcm", keys["other_file"])
    assert p.returncode == 2, p.stderr
    assert objreader.key_id(keys["key"]).hex().encode() in p.stderr
    # Another key forced in under the right key id: the tags fail, exit 3.
    hdr, frames, _ = split_frames(obj)
    bad = hdr[:16] + objreader.key_id(keys["other"]) + hdr[32:] + obj[56:]
    assert_rejected(bad, "aes-256-gcm", [keys["other"]], keys["other_file"],
                    match="frame 0 failed verification")


def test_key_file_rules(keys, tmp_path):
    obj = encode(b"x", "aes-256-gcm", keys["file"])
    loose = tmp_path / "loose.key"
    loose.write_bytes(keys["key"])
    os.chmod(loose, 0o644)
    p = tool_decode(obj, "aes-256-gcm", str(loose))
    assert p.returncode == 2 and b"chmod 600" in p.stderr, p.stderr
    short = write_key(tmp_path / "short.key", keys["key"][:31])
    p = tool_decode(obj, "aes-256-gcm", short)
    assert p.returncode == 2, p.stderr


def test_objtool_usage():
    for args in ([], ["frob"], ["encode"], ["decode", "--identity", "x", "--level", "3"],
                 ["encode", "--identity", "x", "--level", "20", "--cipher", "none"],
                 ["encode", "--identity", "x", "--frame-size", str(4 * MIB + 1), "--cipher",
                  "none"],
                 ["encode", "--identity", "x"],  # aes-256-gcm without a key file
                 ["encode", "--identity", "x", "--compression", "lz4", "--cipher", "none"]):
        p = objtool(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith(b"pd_objtool: error: "), p.stderr
        assert p.stdout == b""
