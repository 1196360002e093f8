"""ctypes declarations for libkeyward (include/keyward.h), loaded lazily.

Every function this package calls is declared here with its exact
argument and result types; nothing else touches the library.  Opaque
handles get their own pointer types so that, say, a reader cannot be
passed where a client is expected.
"""
import ctypes
import ctypes.util
import os
import threading

__all__ = ["lib", "ClientOptions", "ContextPair", "FileOptions",
           "ClientP", "DataKeyP", "ReaderP", "PROGRESS_FN", "UINT64_MAX"]

UINT64_MAX = (1 << 64) - 1
# The major version this binding was written against (KW_VERSION_MAJOR).
_ABI_MAJOR = 0


class _Client(ctypes.Structure):
    pass


class _DataKey(ctypes.Structure):
    pass


class _Reader(ctypes.Structure):
    pass


ClientP = ctypes.POINTER(_Client)
DataKeyP = ctypes.POINTER(_DataKey)
ReaderP = ctypes.POINTER(_Reader)


class ClientOptions(ctypes.Structure):
    """struct kw_client_options, in header order."""
    _fields_ = [
        ("addr", ctypes.c_char_p),
        ("cert", ctypes.c_char_p),
        ("key", ctypes.c_char_p),
        ("ca", ctypes.c_char_p),
        ("token", ctypes.c_char_p),
        ("timeout_ms", ctypes.c_long),
        ("retries", ctypes.c_int),
    ]


class ContextPair(ctypes.Structure):
    """struct kw_context_pair."""
    _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p)]


# typedef void (*kw_progress_fn)(void *arg, unsigned long long done,
#     unsigned long long total);
PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_ulonglong,
                               ctypes.c_ulonglong)


class FileOptions(ctypes.Structure):
    """struct kw_file_options."""
    _fields_ = [
        ("chunk_size", ctypes.c_uint),
        ("threads", ctypes.c_uint),
        ("progress", PROGRESS_FN),
        ("progress_arg", ctypes.c_void_p),
    ]


_c_int = ctypes.c_int
_c_size = ctypes.c_size_t
_c_str = ctypes.c_char_p
_c_ull = ctypes.c_ulonglong
_PAIRS = ctypes.POINTER(ContextPair)

# name: (restype, argtypes)
_PROTOTYPES = {
    "kw_strerror": (_c_str, [_c_int]),
    "kw_error_name": (_c_str, [_c_int]),
    "kw_version": (_c_str, []),
    "kw_client_new": (_c_int, [ctypes.POINTER(ClientOptions),
                               ctypes.POINTER(ClientP), ctypes.c_char_p,
                               _c_size]),
    "kw_client_free": (None, [ClientP]),
    "kw_client_message": (_c_str, [ClientP]),
    "kw_client_status": (_c_int, [ClientP]),
    # ret_body is a char ** the caller frees with kw_free: received as a
    # void pointer so that ctypes does not convert (and lose) it.
    "kw_client_request": (_c_int, [ClientP, _c_str, _c_str, _c_str,
                                   ctypes.POINTER(ctypes.c_void_p)]),
    "kw_free": (None, [ctypes.c_void_p]),
    "kw_datakey_generate": (_c_int, [ClientP, _c_str, _PAIRS, _c_size,
                                     ctypes.POINTER(DataKeyP)]),
    "kw_datakey_decrypt": (_c_int, [ClientP, _c_str, _c_str, _PAIRS, _c_size,
                                    ctypes.POINTER(DataKeyP)]),
    # An address, not c_char_p: the DEK must not be copied into a bytes
    # object behind the caller's back (and may contain NUL bytes).
    "kw_datakey_plaintext": (ctypes.c_void_p, [DataKeyP,
                                               ctypes.POINTER(_c_size)]),
    "kw_datakey_wrapped": (_c_str, [DataKeyP]),
    "kw_datakey_key_name": (_c_str, [DataKeyP]),
    "kw_datakey_key_version": (ctypes.c_ulong, [DataKeyP]),
    "kw_datakey_free": (None, [DataKeyP]),
    "kw_file_encrypt": (_c_int, [ClientP, _c_str, _c_str, _c_str, _PAIRS,
                                 _c_size, ctypes.POINTER(FileOptions)]),
    "kw_file_decrypt": (_c_int, [ClientP, _c_str, _c_str, _c_ull, _c_ull,
                                 ctypes.POINTER(FileOptions)]),
    "kw_reader_open": (_c_int, [ClientP, _c_str, ctypes.POINTER(ReaderP)]),
    "kw_reader_pread": (_c_int, [ReaderP, ctypes.c_void_p, _c_size, _c_ull,
                                 ctypes.POINTER(_c_size)]),
    "kw_reader_size": (_c_ull, [ReaderP]),
    "kw_reader_close": (None, [ReaderP]),
    "kw_audit_verify": (_c_int, [_c_str, ctypes.POINTER(_c_ull),
                                 ctypes.POINTER(_c_ull), ctypes.c_char_p,
                                 _c_size]),
}

_lock = threading.Lock()
_lib = None


def _candidates():
    path = os.environ.get("KEYWARD_LIB")
    if path:
        # An explicit path is used or fails: never silently fall back to
        # another copy of the library.
        return [path], True
    found = ctypes.util.find_library("keyward")
    names = [found] if found else []
    names.append("libkeyward.so.%d" % _ABI_MAJOR)
    return names, False


def _load():
    names, explicit = _candidates()
    errors = []
    for name in names:
        try:
            handle = ctypes.CDLL(name)
            break
        except OSError as e:
            errors.append("%s: %s" % (name, e))
    else:
        hint = ("check KEYWARD_LIB" if explicit else
                "install libkeyward or set KEYWARD_LIB to the path of "
                "libkeyward.so")
        raise OSError("libkeyward cannot be loaded (%s): %s"
                      % (hint, "; ".join(errors)))
    for fname, (restype, argtypes) in _PROTOTYPES.items():
        try:
            fn = getattr(handle, fname)
        except AttributeError:
            raise OSError("%s lacks %s: not a libkeyward this binding "
                          "supports" % (handle._name, fname)) from None
        fn.restype = restype
        fn.argtypes = argtypes
    version = handle.kw_version().decode("ascii", "replace")
    if version.split(".")[0] != str(_ABI_MAJOR):
        raise OSError("%s is libkeyward %s; this binding needs %d.x"
                      % (handle._name, version, _ABI_MAJOR))
    return handle


def lib():
    """The loaded library (loaded on first use, then cached)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _load()
    return _lib
