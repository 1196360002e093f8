"""keyward: Python binding of libkeyward, the keyward key broker's client.

    import keyward

    with keyward.Client() as c:                  # KEYWARD_ADDR, _CERT, ...
        with c.datakey("datasets", {"dataset": "imagenet-1k"}) as dk:
            with dk.plaintext_view() as key:     # locked memory, no copy
                ...
            stored = dk.wrapped
        c.encrypt_file("shard.bin", "shard.kw", "datasets",
                       {"dataset": "imagenet-1k"})

    with keyward.open("shard.kw") as f:          # read-only, seekable
        f.seek(1 << 20)
        block = f.read(4096)

Everything goes through libkeyward.so via ctypes (no other dependency).
The library is found through $KEYWARD_LIB (a path), then
ctypes.util.find_library("keyward"), then "libkeyward.so.0"; it is loaded
on first use, so importing this package never fails for want of it.
"""
import ctypes
import os

from . import errors
from ._native import lib
from .client import Client, DataKey
from .errors import (CODES, ConfigError, DeniedError, Error, IntegrityError,
                     NotFoundError, UnavailableError)
from .file import EncryptedFile, open

globals().update(CODES)  # the KW_ERR_* constants

__version__ = "0.1.0"

__all__ = ["Client", "DataKey", "EncryptedFile", "open", "Error",
           "ConfigError", "DeniedError", "NotFoundError", "IntegrityError",
           "UnavailableError", "CODES", "library_version", "audit_verify",
           "__version__"] + list(CODES)


def library_version():
    """The version of the loaded libkeyward ("MAJOR.MINOR.PATCH")."""
    return lib().kw_version().decode("ascii")


def audit_verify(path):
    """Checks the hash chain of keywardd's audit log at path (offline).
    Returns the number of records; raises IntegrityError (with ``.line``,
    the first bad line, 1-based) when the chain is broken."""
    records = ctypes.c_ulonglong(0)
    bad = ctypes.c_ulonglong(0)
    err = ctypes.create_string_buffer(512)
    p = os.fsencode(path)
    if b"\0" in p:
        raise ValueError("path: contains a NUL character")
    rc = lib().kw_audit_verify(p, ctypes.byref(records), ctypes.byref(bad),
                               err, len(err))
    if rc != 0:
        e = errors.make_error(rc, err.value.decode("utf-8", "replace") or
                              lib().kw_strerror(rc).decode("utf-8", "replace"))
        e.line = int(bad.value)
        raise e
    return int(records.value)
