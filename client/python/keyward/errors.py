"""Errors raised by the keyward binding.

Every failure of a libkeyward call raises :class:`Error` or one of its
subclasses.  An error carries:

``code``
    the negative ``KW_ERR_*`` number (ABI-stable, see include/keyward.h);
``name``
    its symbolic name, e.g. ``"KW_ERR_DENIED"``;
``status``
    the HTTP status of the server's answer, 0 when there was none;
``message``
    what went wrong and what to do: the server's message when it sent
    one, else libkeyward's explanation (also ``str(error)``).

Subclasses, for the cases callers commonly handle differently:

=====================  ==================================================
``ConfigError``        ``KW_ERR_CONFIG``: address, certificates or token
                       missing or unusable
``DeniedError``        ``KW_ERR_DENIED``: the policy does not allow this
                       identity this operation, key or context
``NotFoundError``      ``KW_ERR_NOT_FOUND``: no such key (or file)
``IntegrityError``     ``KW_ERR_AUTH``: an encrypted file or wrapped key
                       was modified, truncated, or is bound to another
                       context: do not use its contents
``UnavailableError``   transient, worth retrying later:
                       ``KW_ERR_UNAVAILABLE``, ``KW_ERR_CONNECT``,
                       ``KW_ERR_TIMEOUT``, ``KW_ERR_RATE_LIMITED``,
                       ``KW_ERR_HSM_DOWN`` (libkeyward has already retried
                       within the client's ``retries``)
=====================  ==================================================
"""

__all__ = ["Error", "ConfigError", "DeniedError", "NotFoundError",
           "IntegrityError", "UnavailableError", "CODES"]

# enum kw_error of include/keyward.h (append only there, and here).
CODES = {
    "KW_ERR_INTERNAL": -1,
    "KW_ERR_NOMEM": -2,
    "KW_ERR_INVALID": -3,
    "KW_ERR_TOO_LARGE": -4,
    "KW_ERR_IO": -5,
    "KW_ERR_CONFIG": -6,
    "KW_ERR_MEMLOCK": -7,
    "KW_ERR_NOT_FOUND": -8,
    "KW_ERR_EXISTS": -9,
    "KW_ERR_AUTH": -10,
    "KW_ERR_DENIED": -11,
    "KW_ERR_UNAVAILABLE": -12,
    "KW_ERR_HSM_MODULE": -13,
    "KW_ERR_HSM_TOKEN": -14,
    "KW_ERR_HSM_PIN": -15,
    "KW_ERR_HSM_DOWN": -16,
    "KW_ERR_HSM": -17,
    "KW_ERR_HSM_UNSUPPORTED": -18,
    "KW_ERR_HSM_KEY": -19,
    "KW_ERR_RANDOM": -20,
    "KW_ERR_TIMEOUT": -21,
    "KW_ERR_CRYPTO": -22,
    "KW_ERR_PERM": -23,
    "KW_ERR_UNAUTHENTICATED": -24,
    "KW_ERR_CONNECT": -25,
    "KW_ERR_PROTOCOL": -26,
    "KW_ERR_RATE_LIMITED": -27,
    "KW_ERR_FORMAT": -28,
}
globals().update(CODES)
__all__ += list(CODES)


class Error(Exception):
    """A libkeyward call failed; see the module documentation."""

    def __init__(self, code, message, name=None, status=0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.name = name or _NAMES.get(code, "KW_ERR_?")
        self.status = status

    def __str__(self):
        return self.message

    def __repr__(self):
        return "%s(%s, %r)" % (type(self).__name__, self.name, self.message)


class ConfigError(Error):
    """KW_ERR_CONFIG: the client's configuration is missing or unusable."""


class DeniedError(Error):
    """KW_ERR_DENIED: not permitted by keywardd's policy."""


class NotFoundError(Error):
    """KW_ERR_NOT_FOUND: no such key or file."""


class IntegrityError(Error):
    """KW_ERR_AUTH: integrity check or decryption failed."""


class UnavailableError(Error):
    """A transient failure: the server is unreachable, busy or degraded."""


_NAMES = {v: k for k, v in CODES.items()}
_CLASSES = {
    CODES["KW_ERR_CONFIG"]: ConfigError,
    CODES["KW_ERR_DENIED"]: DeniedError,
    CODES["KW_ERR_NOT_FOUND"]: NotFoundError,
    CODES["KW_ERR_AUTH"]: IntegrityError,
    CODES["KW_ERR_UNAVAILABLE"]: UnavailableError,
    CODES["KW_ERR_CONNECT"]: UnavailableError,
    CODES["KW_ERR_TIMEOUT"]: UnavailableError,
    CODES["KW_ERR_RATE_LIMITED"]: UnavailableError,
    CODES["KW_ERR_HSM_DOWN"]: UnavailableError,
}


def make_error(code, message, name=None, status=0):
    """The Error (subclass) for code."""
    return _CLASSES.get(code, Error)(code, message, name, status)
