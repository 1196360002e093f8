"""The Python binding (client/python) against a running keywardd.

Started by tests/integration/test_python.sh, which sets up the daemon and
passes, besides KEYWARD_LIB, KEYWARD_ADDR and KEYWARD_CA:
  KW_TEST_ENV      the dev environment (clients/<who>.{pem,key})
  KW_TEST_DIR      a scratch directory
  KW_TEST_EXAMPLE  client/python/examples/read_encrypted.py
  KW_TEST_AUDIT    the daemon's audit log
Identities (policy in test_python.sh): train-job may make and unwrap data
keys for dataset=imagenet-*, eval-job may only unwrap them, app nothing,
operator administers keys.
"""
import base64
import gc
import hashlib
import importlib.util
import io
import os
import random
import socket
import subprocess
import threading
import time
import unittest

import keyward

ENV = os.environ["KW_TEST_ENV"]
TMP = os.environ["KW_TEST_DIR"]
EXAMPLE = os.environ.get("KW_TEST_EXAMPLE", "")
CTX = {"dataset": "imagenet-1k", "split": "train"}
CHUNK = 65536
PY = "/usr/bin/python3"


def creds(who):
    return (os.path.join(ENV, "clients", who + ".pem"),
            os.path.join(ENV, "clients", who + ".key"))


def client(who, **kw):
    cert, key = creds(who)
    return keyward.Client(cert=cert, key=key, **kw)


def who_env(who):
    """The environment a process acting as who gets."""
    cert, key = creds(who)
    env = dict(os.environ)
    env.update(KEYWARD_CERT=cert, KEYWARD_KEY=key)
    return env


def read(path):
    with open(path, "rb") as f:
        return f.read()


def setUpModule():
    with client("operator") as op:
        try:
            op.request("POST", "/v1/keys", {"name": "datasets"})
        except keyward.Error as e:
            if e.name != "KW_ERR_EXISTS":
                raise


class TestDataKeys(unittest.TestCase):
    def setUp(self):
        self.c = client("train-job")

    def tearDown(self):
        self.c.close()

    def test_datakey_decrypt_round_trip(self):
        with self.c.datakey("datasets", CTX) as dk:
            self.assertEqual(dk.key_name, "datasets")
            self.assertGreaterEqual(dk.version, 1)
            self.assertEqual(base64.b64decode(dk.wrapped, validate=True)[:4],
                             b"KWDK")
            plain = dk.plaintext()
            self.assertEqual(len(plain), 32)
            self.assertNotIn(dk.wrapped, repr(dk))
            wrapped = dk.wrapped
        # Context in another order: the same binding.
        ctx = dict(reversed(list(CTX.items())))
        with client("eval-job") as ev, ev.decrypt("datasets", wrapped, ctx) as dk2:
            self.assertEqual(dk2.plaintext(), plain)
            self.assertEqual(dk2.wrapped, wrapped)
            with dk2.plaintext_view() as v:
                self.assertTrue(v.readonly)
                self.assertEqual(v.nbytes, 32)
                self.assertEqual(bytes(v), plain)

    def test_closed_data_key(self):
        dk = self.c.datakey("datasets", CTX)
        dk.close()
        dk.close()  # twice is fine
        self.assertTrue(dk.closed)
        self.assertIn("closed", repr(dk))
        self.assertEqual(dk.key_name, "datasets")  # metadata stays
        with self.assertRaises(ValueError):
            dk.plaintext()
        with self.assertRaises(ValueError):
            dk.plaintext_view()

    def test_view_keeps_key_and_blocks_close(self):
        dk = self.c.datakey("datasets", CTX)
        plain = dk.plaintext()
        v = dk.plaintext_view()
        part = v[4:8]
        v.release()
        # A slice still points into the locked memory: close refuses.
        with self.assertRaises(BufferError):
            dk.close()
        self.assertEqual(bytes(part), plain[4:8])
        del part
        gc.collect()
        dk.close()
        # A view outliving its DataKey object keeps the memory alive.
        dk = self.c.datakey("datasets", CTX)
        plain = dk.plaintext()
        v = dk.plaintext_view()
        del dk
        gc.collect()
        self.assertEqual(bytes(v), plain)
        v.release()

    def test_denied_other_context(self):
        with self.assertRaises(keyward.DeniedError) as cm:
            self.c.datakey("datasets", {"dataset": "laion"})
        e = cm.exception
        self.assertEqual(e.code, keyward.KW_ERR_DENIED)
        self.assertEqual(e.code, -11)
        self.assertEqual(e.name, "KW_ERR_DENIED")
        self.assertEqual(e.status, 403)
        self.assertIsInstance(e, keyward.Error)
        self.assertIn("403", str(e))
        self.assertGreater(len(e.message), 20)

    def test_denied_other_identity(self):
        with self.c.datakey("datasets", CTX) as dk:
            wrapped = dk.wrapped
        with client("app") as app:
            with self.assertRaises(keyward.DeniedError) as cm:
                app.decrypt("datasets", wrapped, CTX)
            self.assertTrue(str(cm.exception))
        with client("eval-job") as ev:  # may unwrap, not generate
            with self.assertRaises(keyward.DeniedError):
                ev.datakey("datasets", CTX)

    def test_wrong_context_fails_integrity(self):
        with self.c.datakey("datasets", CTX) as dk:
            wrapped = dk.wrapped
        with self.assertRaises(keyward.IntegrityError) as cm:
            self.c.decrypt("datasets", wrapped, {"dataset": "imagenet-2k",
                                                 "split": "train"})
        self.assertEqual(cm.exception.name, "KW_ERR_AUTH")

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            self.c.datakey("datasets", {"dataset": "imagenet-1k\0evil"})
        with self.assertRaises(TypeError):
            self.c.datakey("datasets", {"dataset": 3})
        with self.assertRaises(keyward.Error) as cm:
            self.c.datakey("Bad/Name", CTX)
        self.assertEqual(cm.exception.name, "KW_ERR_INVALID")
        with self.assertRaises(keyward.NotFoundError):
            with client("operator") as op:
                op.request("GET", "/v1/keys/no-such-key")

    def test_keep_alive_reuse(self):
        port = int(os.environ["KEYWARD_ADDR"].rsplit(":", 1)[1])
        ports = set()
        start = time.monotonic()
        for _ in range(50):
            with self.c.datakey("datasets", CTX) as dk:
                self.assertEqual(len(dk.plaintext()), 32)
            ports |= local_ports_to(port)
        elapsed = time.monotonic() - start
        # One TLS connection carried all 50 calls.
        self.assertEqual(len(ports), 1, ports)
        self.assertLess(elapsed, 20.0)
        self.c.close()
        self.assertEqual(local_ports_to(port), set())

    def test_closed_client(self):
        self.c.close()
        self.c.close()
        self.assertTrue(self.c.closed)
        with self.assertRaises(ValueError):
            self.c.datakey("datasets", CTX)

    def test_request(self):
        with client("operator") as op:
            keys = op.request("GET", "/v1/keys")
            self.assertIn("datasets", [k["name"] for k in keys["keys"]])
            with self.assertRaises(keyward.Error) as cm:
                op.request("POST", "/v1/keys", {"name": "datasets"})
            self.assertEqual(cm.exception.name, "KW_ERR_EXISTS")
            self.assertEqual(cm.exception.status, 409)
            self.assertEqual(op.request("GET", "/v1/health")["status"], "ok")


class TestConfig(unittest.TestCase):
    def test_plain_http_refused(self):
        with self.assertRaises(keyward.ConfigError) as cm:
            client("train-job", addr="http://127.0.0.1:1")
        self.assertEqual(cm.exception.code, keyward.KW_ERR_CONFIG)
        self.assertIn("http", str(cm.exception))

    def test_no_credentials(self):
        saved = {k: os.environ.pop(k) for k in ("KEYWARD_CERT", "KEYWARD_KEY",
                                                "KEYWARD_TOKEN")
                 if k in os.environ}
        try:
            with self.assertRaises(keyward.ConfigError) as cm:
                keyward.Client()
            self.assertIn("KEYWARD_CERT", str(cm.exception))
        finally:
            os.environ.update(saved)

    def test_unreachable(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with client("train-job", addr="127.0.0.1:%d" % port,
                    retries=-1, timeout_ms=2000) as c:
            with self.assertRaises(keyward.UnavailableError) as cm:
                c.datakey("datasets", CTX)
        self.assertEqual(cm.exception.name, "KW_ERR_CONNECT")

    def test_library(self):
        self.assertEqual(keyward.library_version().split(".")[0], "0")
        self.assertGreater(keyward.audit_verify(os.environ["KW_TEST_AUDIT"]), 0)


class TestFiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rng = random.Random(1)
        # Not a multiple of the chunk size: a short last chunk.
        cls.plain = rng.randbytes(3 * 1024 * 1024 + 12345)
        cls.src = os.path.join(TMP, "shard.bin")
        cls.enc = os.path.join(TMP, "shard.kw")
        with open(cls.src, "wb") as f:
            f.write(cls.plain)
        cls.progress = []
        with client("train-job") as c:
            c.encrypt_file(cls.src, cls.enc, "datasets", CTX,
                           chunk_size=CHUNK, threads=2,
                           progress=lambda d, t: cls.progress.append((d, t)))
        cls.ev = client("eval-job")

    @classmethod
    def tearDownClass(cls):
        cls.ev.close()

    def open(self):
        return keyward.open(self.enc, client=self.ev)

    def test_encrypted(self):
        self.assertEqual(os.stat(self.enc).st_mode & 0o777, 0o600)
        data = read(self.enc)
        self.assertNotIn(self.plain[:64], data)
        self.assertTrue(self.progress)
        self.assertEqual(self.progress[-1], (len(self.plain), len(self.plain)))

    def test_read_whole(self):
        with self.open() as f:
            self.assertTrue(f.readable() and f.seekable())
            self.assertFalse(f.writable())
            self.assertEqual(f.size(), len(self.plain))
            self.assertEqual(f.read(), self.plain)
            self.assertEqual(f.tell(), len(self.plain))
            self.assertEqual(f.read(10), b"")
            self.assertEqual(f.readinto(bytearray(10)), 0)
            with self.assertRaises(io.UnsupportedOperation):
                f.write(b"x")
            with self.assertRaises(io.UnsupportedOperation):
                f.fileno()

    def test_random_ranges(self):
        rng = random.Random(2)
        n = len(self.plain)
        with self.open() as f:
            for i in range(400):
                off = rng.randrange(n + 100)
                size = rng.choice([1, 17, 4096, CHUNK, CHUNK + 1,
                                   rng.randrange(1, 3 * CHUNK)])
                if i % 2:
                    f.seek(off)
                    got = f.read(size)
                    self.assertEqual(f.tell(), off + len(got))
                else:
                    got = f.pread(size, off)
                self.assertEqual(got, self.plain[off:off + size], (off, size))

    def test_chunk_boundaries(self):
        n = len(self.plain)
        with self.open() as f:
            for k in range(1, n // CHUNK + 1):
                for d in (-3, -1, 0, 1):
                    off = k * CHUNK + d
                    self.assertEqual(f.pread(7, off), self.plain[off:off + 7])
            # Exactly two chunks, starting mid-chunk: spans three.
            off = CHUNK // 2
            self.assertEqual(f.pread(2 * CHUNK, off),
                             self.plain[off:off + 2 * CHUNK])

    def test_end_and_seek(self):
        n = len(self.plain)
        with self.open() as f:
            self.assertEqual(f.seek(-10, io.SEEK_END), n - 10)
            self.assertEqual(f.read(100), self.plain[-10:])  # short
            self.assertEqual(f.read(100), b"")
            self.assertEqual(f.seek(n + 5000), n + 5000)  # past the end
            self.assertEqual(f.read(1), b"")
            self.assertEqual(f.tell(), n + 5000)
            self.assertEqual(f.seek(100, io.SEEK_END), n + 100)
            self.assertEqual(f.read(), b"")
            f.seek(1000)
            self.assertEqual(f.seek(-500, io.SEEK_CUR), 500)
            self.assertEqual(f.read(4), self.plain[500:504])
            with self.assertRaises(ValueError):
                f.seek(-1)
            with self.assertRaises(ValueError):
                f.seek(-n - 1, io.SEEK_END)
            with self.assertRaises(ValueError):
                f.seek(0, 3)
            self.assertEqual(f.tell(), 504)  # unchanged by failed seeks
            self.assertEqual(f.pread(10, n), b"")
            self.assertEqual(f.pread(10, 1 << 62), b"")
            self.assertEqual(f.pread(0, 5), b"")

    def test_readinto_buffers(self):
        with self.open() as f:
            f.seek(CHUNK - 100)
            buf = bytearray(300)
            self.assertEqual(f.readinto(buf), 300)
            self.assertEqual(bytes(buf), self.plain[CHUNK - 100:CHUNK + 200])
            mv = memoryview(bytearray(1000))[100:200]
            self.assertEqual(f.readinto(mv), 100)
            self.assertEqual(bytes(mv), self.plain[CHUNK + 200:CHUNK + 300])
            import array
            a = array.array("I", bytes(40))  # 10 items of 4 bytes
            f.seek(8)
            self.assertEqual(f.readinto(a), 40)  # bytes, not items
            self.assertEqual(a.tobytes(), self.plain[8:48])
            with self.assertRaises(TypeError):
                f.readinto(b"read-only")

    @unittest.skipUnless(importlib.util.find_spec("numpy"), "numpy absent")
    def test_numpy(self):
        import numpy
        with self.open() as f:
            f.seek(3 * CHUNK - 8)
            a = numpy.empty(1000, dtype=numpy.float32)
            self.assertEqual(f.readinto(a), 4000)
            self.assertEqual(a.tobytes(), self.plain[3 * CHUNK - 8:3 * CHUNK + 3992])
            b = numpy.frombuffer(f.pread(4096, 12345), dtype=numpy.uint8)
            self.assertEqual(int(b.sum()), sum(self.plain[12345:12345 + 4096]))

    def encrypt(self, data, name):
        src = os.path.join(TMP, name)
        with open(src, "wb") as f:
            f.write(data)
        with client("train-job") as c:
            c.encrypt_file(src, src + ".kw", "datasets", CTX, chunk_size=4096)
        return src + ".kw"

    def test_zip_loader(self):
        # torch.load's format is a zip archive read through seek/tell/read.
        import zipfile
        members = {"archive/data/%d" % i: random.Random(i).randbytes(5000 * i)
                   for i in range(6)}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for name, data in members.items():
                z.writestr(name, data)
        enc = self.encrypt(buf.getvalue(), "model.zip")
        for wrap in (lambda f: f, io.BufferedReader):
            with wrap(keyward.open(enc, client=self.ev)) as f, zipfile.ZipFile(f) as z:
                self.assertEqual(sorted(z.namelist()), sorted(members))
                for name in reversed(list(members)):
                    self.assertEqual(z.read(name), members[name])

    @unittest.skipUnless(importlib.util.find_spec("numpy"), "numpy absent")
    def test_numpy_load(self):
        import numpy
        a = numpy.arange(100000, dtype=numpy.float64).reshape(250, 400)
        buf = io.BytesIO()
        numpy.save(buf, a)
        enc = self.encrypt(buf.getvalue(), "features.npy")
        # The raw file: numpy.load reads it with read() (a BufferedReader
        # would make it try fileno()).
        with keyward.open(enc, client=self.ev) as f:
            b = numpy.load(f)
        self.assertTrue(numpy.array_equal(a, b))

    def test_buffered_reader(self):
        rng = random.Random(3)
        n = len(self.plain)
        with io.BufferedReader(self.open(), buffer_size=16384) as f:
            self.assertEqual(f.read(100), self.plain[:100])
            self.assertEqual(f.peek(1)[:1], self.plain[100:101])
            for _ in range(200):
                off = rng.randrange(n)
                size = rng.randrange(1, 40000)
                f.seek(off)
                self.assertEqual(f.read(size), self.plain[off:off + size])
            f.seek(-5, io.SEEK_END)
            self.assertEqual(f.read(), self.plain[-5:])
            f.seek(0)
            h = hashlib.sha256()
            for block in iter(lambda: f.read(100000), b""):
                h.update(block)
            self.assertEqual(h.digest(), hashlib.sha256(self.plain).digest())
            f.seek(0)
            self.assertEqual(f.readline(), self.plain[:self.plain.index(b"\n") + 1])
        self.assertTrue(f.raw.closed)

    def test_threads(self):
        n = len(self.plain)
        errors = []

        def work(seed):
            rng = random.Random(seed)
            try:
                for _ in range(100):
                    off = rng.randrange(n)
                    size = rng.randrange(1, 3 * CHUNK)
                    if f.pread(size, off) != self.plain[off:off + size]:
                        errors.append((off, size))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        with self.open() as f:
            ts = [threading.Thread(target=work, args=(s,)) for s in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        self.assertEqual(errors, [])

    def test_close_while_reading(self):
        f = self.open()
        stop = threading.Event()
        seen = []

        def work():
            while not stop.is_set():
                try:
                    f.pread(2 * CHUNK, 1000)
                except ValueError:
                    seen.append("closed")
                    return

        ts = [threading.Thread(target=work) for _ in range(3)]
        for t in ts:
            t.start()
        time.sleep(0.2)
        f.close()
        stop.set()
        for t in ts:
            t.join()
        self.assertTrue(f.closed)

    def test_close(self):
        f = self.open()
        f.read(10)
        f.close()
        f.close()  # twice is safe
        self.assertTrue(f.closed)
        for op in (lambda: f.read(1), lambda: f.read(), lambda: f.readinto(bytearray(4)),
                   lambda: f.pread(1, 0), lambda: f.seek(0), f.tell, f.size,
                   f.readable, f.seekable):
            with self.assertRaises(ValueError):
                op()
        b = io.BufferedReader(self.open())
        b.close()
        b.close()
        with self.assertRaises(ValueError):
            b.read(1)

    def test_open_from_environment(self):
        cert, key = creds("eval-job")
        saved = dict(os.environ)
        os.environ.update(KEYWARD_CERT=cert, KEYWARD_KEY=key)
        try:
            f = keyward.open(self.enc)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        owned = f._owned
        self.assertIsNotNone(owned)
        with f:
            self.assertEqual(f.pread(100, 5000), self.plain[5000:5100])
        self.assertTrue(owned.closed)

    def test_decrypt_file(self):
        out = os.path.join(TMP, "dec.bin")
        self.ev.decrypt_file(self.enc, out, threads=2)
        self.assertEqual(read(out), self.plain)
        self.ev.decrypt_file(self.enc, out, offset=CHUNK - 5, length=CHUNK + 10)
        self.assertEqual(read(out), self.plain[CHUNK - 5:2 * CHUNK + 5])
        os.unlink(out)

    def test_denied_files(self):
        with client("app") as app:
            with self.assertRaises(keyward.DeniedError):
                keyward.open(self.enc, client=app)
            with self.assertRaises(keyward.DeniedError):
                app.decrypt_file(self.enc, os.path.join(TMP, "app.out"))
        self.assertFalse(os.path.exists(os.path.join(TMP, "app.out")))
        out = os.path.join(TMP, "x.kw")
        with self.assertRaises(keyward.DeniedError):
            self.ev.encrypt_file(self.src, out, "datasets", CTX)
        self.assertFalse(os.path.exists(out))

    def test_tampered_chunk(self):
        bad = os.path.join(TMP, "flip.kw")
        data = bytearray(read(self.enc))
        # A byte in the middle of the file: one chunk, not the header.
        pos = len(data) // 2
        data[pos] ^= 1
        with open(bad, "wb") as f:
            f.write(data)
        with keyward.open(bad, client=self.ev) as f:
            self.assertEqual(f.pread(1000, 0), self.plain[:1000])
            with self.assertRaises(keyward.IntegrityError) as cm:
                f.read()
            self.assertEqual(cm.exception.code, keyward.KW_ERR_AUTH)
            self.assertIn("flip.kw", str(cm.exception))
            with self.assertRaises(keyward.IntegrityError):
                with io.BufferedReader(keyward.open(bad, client=self.ev)) as b:
                    b.read()
        out = os.path.join(TMP, "flip.out")
        with self.assertRaises(keyward.IntegrityError):
            self.ev.decrypt_file(bad, out)
        self.assertFalse(os.path.exists(out))

    def test_truncated_and_foreign(self):
        bad = os.path.join(TMP, "trunc.kw")
        with open(bad, "wb") as f:
            f.write(read(self.enc)[:-1])
        with self.assertRaises(keyward.IntegrityError):
            keyward.open(bad, client=self.ev)
        with self.assertRaises(keyward.Error) as cm:
            keyward.open(self.src, client=self.ev)
        self.assertEqual(cm.exception.name, "KW_ERR_FORMAT")
        with self.assertRaises(keyward.NotFoundError):
            keyward.open(os.path.join(TMP, "missing.kw"), client=self.ev)

    def test_empty_file(self):
        src = os.path.join(TMP, "empty")
        enc = src + ".kw"
        open(src, "wb").close()
        with client("train-job") as c:
            c.encrypt_file(src, enc, "datasets", {"dataset": "imagenet-x"})
        with keyward.open(enc, client=self.ev) as f:
            self.assertEqual(f.size(), 0)
            self.assertEqual(f.read(), b"")
            self.assertEqual(f.pread(1, 0), b"")

    @unittest.skipUnless(os.path.exists(EXAMPLE), "example not found")
    def test_example(self):
        spec = importlib.util.spec_from_file_location("read_encrypted", EXAMPLE)
        ex = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ex)
        h = hashlib.sha256()
        for off, size in ex.plan(len(self.plain), 64, 7):
            h.update(self.plain[off:off + size])
        want = "sha256 " + h.hexdigest()
        env = who_env("eval-job")
        runs = [("plain", [PY, "-c", HIDE_NUMPY, EXAMPLE])]
        if importlib.util.find_spec("numpy"):
            runs.append(("numpy", [PY, EXAMPLE]))
        for mode, cmd in runs:
            r = subprocess.run(cmd + [self.enc, "64", "7"], env=env,
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(want, r.stdout, (mode, r.stdout))
            self.assertIn("(%s)" % mode, r.stdout)


# Runs the example (argv[1]) with numpy unimportable.
HIDE_NUMPY = """
import runpy, sys
sys.modules["numpy"] = None  # import numpy now raises ImportError
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def local_ports_to(port):
    """Local ports of this process's TCP connections to 127.0.0.1:port."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            local, remote, state, inode = p[1], p[2], p[3], p[9]
            # state 01: ESTABLISHED
            if (inode in inodes and state == "01" and
                    int(remote.split(":")[1], 16) == port):
                ports.add(int(local.split(":")[1], 16))
    return ports


if __name__ == "__main__":
    unittest.main(verbosity=2)
