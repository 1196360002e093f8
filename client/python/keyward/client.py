"""keyward.Client and keyward.DataKey over libkeyward."""
import ctypes
import json
import os
import threading
import weakref

from . import _native
from ._native import lib
from .errors import make_error

__all__ = ["Client", "DataKey"]


# ---- arguments -------------------------------------------------------------

def _text(value, what):
    """A str for a char * argument, UTF-8; NUL bytes are refused (C would
    silently cut the string there, e.g. a context value)."""
    if isinstance(value, bytes):
        b = value
    elif isinstance(value, str):
        b = value.encode("utf-8")
    else:
        raise TypeError("%s: expected str, got %s" % (what, type(value).__name__))
    if b"\0" in b:
        raise ValueError("%s: contains a NUL character" % what)
    return b


def _opt_text(value, what):
    return None if value is None else _text(value, what)


def _path(value, what="path"):
    b = os.fsencode(value)
    if b"\0" in b:
        raise ValueError("%s: contains a NUL character" % what)
    return b


def _opt_path(value, what):
    return None if value is None else _path(value, what)


def _context(context):
    """(array of struct kw_context_pair, count, the bytes it points at)."""
    if context is None:
        context = {}
    if not hasattr(context, "items"):
        raise TypeError("context: expected a dict of str to str")
    items = [(_text(k, "context key"), _text(v, "context[%r]" % (k,)))
             for k, v in context.items()]
    arr = (_native.ContextPair * max(len(items), 1))()
    for i, (k, v) in enumerate(items):
        arr[i].key = k
        arr[i].value = v
    # ctypes keeps the bytes of c_char_p fields alive in arr._objects;
    # items is returned too so that nothing depends on that detail.
    return arr, len(items), items


class _Progress:
    """A kw_progress_fn around a Python callable; an exception it raises is
    kept and re-raised after the C call (ctypes would only print it)."""

    def __init__(self, fn):
        self.fn = fn
        self.exc = None
        self.cfn = _native.PROGRESS_FN(self._call) if fn else _native.PROGRESS_FN()

    def _call(self, _arg, done, total):
        if self.exc is None:
            try:
                self.fn(done, total)
            except BaseException as e:  # noqa: B902 - re-raised below
                self.exc = e

    def check(self):
        if self.exc is not None:
            exc, self.exc = self.exc, None
            raise exc


def _uint(value, what, bits):
    value = int(value)
    if value < 0 or value >= 1 << bits:
        raise ValueError("%s: out of range" % what)
    return value


# ---- data keys -------------------------------------------------------------

class _KeyHandle:
    """Owns one kw_datakey *; frees it when closed or when the last
    reference (the DataKey or a live plaintext view) goes."""

    def __init__(self, ptr):
        self.ptr = ptr
        self.views = 0
        # Reentrant: a view's finalizer may run from a garbage
        # collection triggered while the lock is held.
        self.lock = threading.RLock()

    def view_gone(self):
        with self.lock:
            self.views -= 1

    def free(self):
        ptr, self.ptr = self.ptr, None
        if ptr:
            lib().kw_datakey_free(ptr)

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: the library is gone
            pass


class DataKey:
    """A data encryption key (DEK) from keywardd.

    ``key_name``, ``version`` and ``wrapped`` (base64 of the wrapped DEK,
    safe to store beside the data) are plain attributes.  The 32-byte
    plaintext lives in libkeyward's locked, guard-paged memory, which is
    wiped when the key is closed.  Use the key in a ``with`` block, or call
    ``close()``, so that it is freed promptly.

    Two ways to use the plaintext:

    ``plaintext_view()``
        a read-only ``memoryview`` of the locked memory itself: no copy
        is made by this module.  It stays valid until ``close()``, which
        raises ``BufferError`` (and keeps the key) while any view, or any
        slice or array made from one, is alive.  Use it as ``with
        dk.plaintext_view() as v: ...`` to release it on leaving the block.
    ``plaintext()``
        a ``bytes`` copy.  It is ordinary Python heap memory: not locked
        (it can be swapped out or land in a core dump), immutable, and
        never wiped; it lives until the garbage collector reclaims it.
        Prefer ``plaintext_view()`` where the consumer accepts a buffer.

    Whatever the consumer does with the key (a cipher object, for example)
    is beyond this module's reach.
    """

    def __init__(self, handle):
        self._h = handle
        L = lib()
        self.key_name = L.kw_datakey_key_name(handle.ptr).decode("utf-8")
        self.version = int(L.kw_datakey_key_version(handle.ptr))
        self.wrapped = L.kw_datakey_wrapped(handle.ptr).decode("ascii")

    @property
    def closed(self):
        return self._h.ptr is None

    def _address(self):
        if self._h.ptr is None:
            raise ValueError("the data key is closed")
        n = ctypes.c_size_t(0)
        addr = lib().kw_datakey_plaintext(self._h.ptr, ctypes.byref(n))
        if not addr or n.value == 0:
            raise ValueError("the data key has no plaintext")
        return addr, n.value

    def plaintext_view(self):
        """A read-only memoryview of the DEK in locked memory (see above)."""
        with self._h.lock:
            addr, n = self._address()
            arr = (ctypes.c_ubyte * n).from_address(addr)
            # The array keeps the handle (and so the memory) alive for as
            # long as any view of it exists, even past the DataKey; the
            # finalizer lets close() know whether one still does.
            arr._kw_owner = self._h
            weakref.finalize(arr, self._h.view_gone)
            self._h.views += 1
        base = memoryview(arr)
        view = base.cast("B").toreadonly()
        base.release()
        return view

    def plaintext(self):
        """A bytes copy of the DEK, outside locked memory (see above)."""
        with self._h.lock:
            addr, n = self._address()
            return ctypes.string_at(addr, n)

    def close(self):
        """Wipes and frees the DEK. Safe to call more than once."""
        with self._h.lock:
            if self._h.views > 0:
                raise BufferError(
                    "%d plaintext view(s) of this data key are still in use: "
                    "release them, and slices or arrays made from them, "
                    "before closing" % self._h.views)
            self._h.free()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<keyward.DataKey %s version %d%s>" % (
            self.key_name, self.version, " closed" if self.closed else "")


# ---- the client ------------------------------------------------------------

class Client:
    """A connection to keywardd: mTLS (or a bearer token), keep-alive,
    retries with backoff on transient failures.

    Arguments left ``None`` (or 0) are taken by libkeyward from the
    environment (``KEYWARD_ADDR``, ``KEYWARD_CERT``, ``KEYWARD_KEY``,
    ``KEYWARD_CA``, ``KEYWARD_TOKEN``) or its defaults (``timeout_ms`` 0:
    10 s per request; ``retries`` 0: 3, negative: none).  Nothing is sent
    before the first call.  Raises ``ConfigError`` when the configuration
    is incomplete.

    A client may be shared between threads: calls are serialized (the C
    client serves one thread at a time).  Use one client per thread for
    parallel requests.  ``close()`` (or leaving a ``with`` block) frees it;
    data keys and open files obtained through it stay usable.
    """

    def __init__(self, addr=None, cert=None, key=None, ca=None, token=None,
                 timeout_ms=0, retries=0):
        self._ptr = None
        self._lock = threading.Lock()
        opts = _native.ClientOptions(
            _opt_text(addr, "addr"), _opt_path(cert, "cert"),
            _opt_path(key, "key"), _opt_path(ca, "ca"),
            _opt_text(token, "token"), int(timeout_ms), int(retries))
        err = ctypes.create_string_buffer(512)
        ptr = _native.ClientP()
        rc = lib().kw_client_new(ctypes.byref(opts), ctypes.byref(ptr), err,
                                 len(err))
        if rc != 0:
            raise make_error(rc, err.value.decode("utf-8", "replace")
                             or _strerror(rc))
        self._ptr = ptr

    # -- plumbing --

    def _checked(self):
        if self._ptr is None:
            raise ValueError("the client is closed")
        return self._ptr

    def _fail(self, rc):
        """The Error for rc from the last call; under self._lock."""
        L = lib()
        msg = L.kw_client_message(self._ptr).decode("utf-8", "replace")
        return make_error(rc, msg or _strerror(rc), status=L.kw_client_status(self._ptr))

    def _call(self, fn, *args):
        with self._lock:
            ptr = self._checked()
            rc = fn(ptr, *args)
            if rc != 0:
                raise self._fail(rc)

    # -- API --

    def datakey(self, key_name, context=None):
        """A new DEK under KEK ``key_name``, bound to ``context`` (a dict of
        str to str that decrypting it must repeat)."""
        ctx, n, _keep = _context(context)
        out = _native.DataKeyP()
        self._call(lib().kw_datakey_generate, _text(key_name, "key_name"),
                   ctx, n, ctypes.byref(out))
        return self._wrap(out)

    def decrypt(self, key_name, wrapped, context=None):
        """Unwraps ``wrapped`` (the base64 ``DataKey.wrapped``) for the same
        key and context."""
        ctx, n, _keep = _context(context)
        out = _native.DataKeyP()
        self._call(lib().kw_datakey_decrypt, _text(key_name, "key_name"),
                   _text(wrapped, "wrapped"), ctx, n, ctypes.byref(out))
        return self._wrap(out)

    @staticmethod
    def _wrap(ptr):
        h = _KeyHandle(ptr)
        try:
            return DataKey(h)
        except BaseException:
            h.free()
            raise

    def encrypt_file(self, in_path, out_path, key_name, context=None,
                     chunk_size=0, threads=0, progress=None):
        """Encrypts ``in_path`` into ``out_path`` (written beside it and
        renamed, mode 0600) under a new DEK from ``key_name`` bound to
        ``context``.  ``chunk_size``: a power of two from 4096 to 64 MiB (0:
        1 MiB); ``threads`` 0: all CPUs; ``progress(done, total)`` is called
        from this thread (and must not use this client)."""
        ctx, n, _keep = _context(context)
        prog = _Progress(progress)
        opt = _native.FileOptions(_uint(chunk_size, "chunk_size", 32),
                                  _uint(threads, "threads", 32), prog.cfn, None)
        try:
            self._call(lib().kw_file_encrypt, _path(in_path, "in_path"),
                       _path(out_path, "out_path"), _text(key_name, "key_name"),
                       ctx, n, ctypes.byref(opt))
        finally:
            prog.check()

    def decrypt_file(self, in_path, out_path, offset=0, length=None,
                     threads=0, progress=None):
        """Decrypts plaintext bytes ``[offset, offset+length)`` of
        ``in_path`` (``length`` None: to the end) into ``out_path`` ("-":
        standard output), reading only the chunks the range touches.
        Nothing is left at ``out_path`` when the file fails its integrity
        check (``IntegrityError``)."""
        prog = _Progress(progress)
        opt = _native.FileOptions(0, _uint(threads, "threads", 32), prog.cfn,
                                  None)
        length = _native.UINT64_MAX if length is None else _uint(length, "length", 64)
        try:
            self._call(lib().kw_file_decrypt, _path(in_path, "in_path"),
                       _path(out_path, "out_path"), _uint(offset, "offset", 64),
                       length, ctypes.byref(opt))
        finally:
            prog.check()

    def request(self, method, path, body=None):
        """One API call (``method``, ``path`` such as "/v1/keys") with a JSON
        body (a dict, or None for none); returns the decoded answer ({} when
        empty).  For calls without a typed method; errors raise ``Error``."""
        data = None if body is None else _text(json.dumps(body), "body")
        ret = ctypes.c_void_p()
        self._call(lib().kw_client_request, _text(method, "method"),
                   _text(path, "path"), data, ctypes.byref(ret))
        try:
            text = ctypes.string_at(ret.value) if ret.value else b""
        finally:
            lib().kw_free(ret)
        return json.loads(text) if text.strip() else {}

    def _reader_open(self, path):
        """kw_reader_open through this client (keyward.open)."""
        out = _native.ReaderP()
        self._call(lib().kw_reader_open, _path(path), ctypes.byref(out))
        return out

    @property
    def closed(self):
        return self._ptr is None

    def close(self):
        """Frees the client and its connection. Safe to call more than once."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
            if ptr:
                lib().kw_client_free(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_ptr", None):
                self.close()
        except Exception:  # interpreter shutdown: the library is gone
            pass


def _strerror(rc):
    return lib().kw_strerror(rc).decode("utf-8", "replace")
