"""The few domain exceptions authd raises. Messages never contain a secret."""


class AuthdError(Exception):
    """Base of every authd error a caller may handle."""


class NotFound(AuthdError):
    """The named user, token, key or request does not exist."""


class AlreadyExists(AuthdError):
    """A user or token serial is taken."""


class Conflict(AuthdError):
    """The object changed between the read and the write (another writer moved it on);
    nothing was written, and the call may be retried with fresh input."""


class InvalidInput(AuthdError):
    """An argument breaks a rule (PIN policy, token parameters, ...); the message says which."""


class StoreUnavailable(AuthdError):
    """The database (or directory holding tokens) cannot be reached."""


class StoreTimeout(StoreUnavailable):
    """The store did not answer within store.timeout, or a request waited longer than
    that for its turn: it is rejected without being decided."""


class KeyFileError(AuthdError):
    """The data-key file is missing, unreadable, corrupt or has unsafe permissions."""
