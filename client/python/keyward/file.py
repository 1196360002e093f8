"""keyward.open: a read-only, seekable binary file over an encrypted file."""
import ctypes
import io
import operator
import os
import threading

from ._native import lib
from .client import Client, _uint
from .errors import make_error

__all__ = ["EncryptedFile", "open"]


class EncryptedFile(io.RawIOBase):
    """The plaintext of an encrypted keyward file, read with random access.

    Reads decrypt and authenticate only the chunks they touch
    (kw_reader_pread); a chunk that fails its check raises
    ``IntegrityError`` and no byte of it is returned.  The file is a raw
    (unbuffered) binary stream: ``read``, ``readinto`` (also straight into
    a writable buffer such as a numpy array), ``seek`` (``SEEK_SET``,
    ``SEEK_CUR``, ``SEEK_END``; past the end is allowed and reads there
    return ``b""``), ``tell``, ``size()``.  It is not writable and has no
    ``fileno()``.  Wrap it in ``io.BufferedReader`` for many small reads.

    ``pread(size, offset)`` reads at an offset without moving the
    position and may be called from several threads at once (the C reader
    is thread-safe for it; the GIL is released during decryption).

    ``close()`` (or leaving a ``with`` block) frees the reader and the
    keys derived for it, waiting for reads under way in other threads.
    Reading after ``close()`` raises ``ValueError``.
    """

    def __init__(self, path, client=None):
        super().__init__()
        # Set before anything can fail: close() runs from __del__ even when
        # __init__ did not finish.
        self._reader = None
        self._owned = None
        self._client = client
        self._pos = 0
        self._size = 0
        self._busy = 0
        self._cv = threading.Condition()
        self.name = path
        if client is None:
            client = self._owned = self._client = Client()
        try:
            self._reader = client._reader_open(path)
        except BaseException:
            self._drop_client()
            raise
        self._size = int(lib().kw_reader_size(self._reader))

    mode = "rb"

    # ---- io.RawIOBase ----

    def readable(self):
        self._checkClosed()
        return True

    def seekable(self):
        self._checkClosed()
        return True

    def writable(self):
        self._checkClosed()
        return False

    def write(self, b):
        raise io.UnsupportedOperation("write: keyward files are read-only")

    def size(self):
        """The plaintext length in bytes."""
        self._checkClosed()
        return self._size

    def tell(self):
        self._checkClosed()
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        self._checkClosed()
        offset = operator.index(offset)
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError("invalid whence (%r, should be 0, 1 or 2)"
                             % (whence,))
        if pos < 0:
            raise ValueError("negative seek position %d" % pos)
        self._pos = pos
        return pos

    def readinto(self, b):
        self._checkClosed()
        pos = self._pos
        n = self._pread_into(b, pos)
        self._pos = pos + n
        return n

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        self._checkClosed()
        buf = bytearray(max(0, min(size, self._size - self._pos)))
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def readall(self):
        return self.read(max(0, self.size() - self._pos))

    def pread(self, size, offset):
        """Up to size bytes at offset, without moving the position
        (thread-safe); b"" at or past the end."""
        size = operator.index(size)
        if size < 0:
            raise ValueError("negative size")
        offset = _uint(offset, "offset", 64)
        self._checkClosed()
        buf = bytearray(max(0, min(size, self._size - offset)))
        n = self._pread_into(buf, offset)
        del buf[n:]
        return bytes(buf)

    # ---- the reader ----

    def _pread_into(self, b, off):
        with memoryview(b) as mv:
            if mv.readonly:
                raise TypeError("readinto: the buffer is read-only")
            with mv.cast("B") as m:
                want = min(len(m), max(0, self._size - off))
                if want == 0:
                    return 0
                arr = (ctypes.c_char * len(m)).from_buffer(m)
                try:
                    return self._pread(ctypes.addressof(arr), want, off)
                finally:
                    del arr  # ends the export so that m can be released

    def _pread(self, addr, want, off):
        with self._cv:
            if self._reader is None:
                raise ValueError("I/O operation on closed file.")
            reader = self._reader
            self._busy += 1
        try:
            got = ctypes.c_size_t(0)
            rc = lib().kw_reader_pread(reader, addr, want, off,
                                       ctypes.byref(got))
        finally:
            with self._cv:
                self._busy -= 1
                if self._busy == 0:
                    self._cv.notify_all()
        if rc != 0:
            raise make_error(rc, "%s: %s" % (
                os.fsdecode(self.name),
                lib().kw_strerror(rc).decode("utf-8", "replace")))
        return got.value

    def _drop_client(self):
        owned, self._owned, self._client = self._owned, None, None
        if owned is not None:
            owned.close()

    def close(self):
        """Frees the reader (and a client this file made). Idempotent."""
        if self.closed:
            return
        with self._cv:
            reader, self._reader = self._reader, None
            while self._busy:
                self._cv.wait()
        try:
            if reader:
                lib().kw_reader_close(reader)
            self._drop_client()
        finally:
            super().close()

    def __repr__(self):
        return "<keyward.EncryptedFile name=%r size=%d%s>" % (
            self.name, self._size, " closed" if self.closed else "")


def open(path, client=None):
    """Opens the encrypted file at ``path`` for reading its plaintext.

    The file's wrapped data key is unwrapped by keywardd through ``client``
    (``None``: a ``Client()`` configured from the environment, owned and
    closed by the returned file).  Raises ``DeniedError`` when this
    identity may not decrypt it, ``IntegrityError`` when its header was
    modified, ``NotFoundError`` when there is no such file, ``Error``
    with name ``KW_ERR_FORMAT`` when it is not an encrypted keyward file.
    """
    return EncryptedFile(path, client)
