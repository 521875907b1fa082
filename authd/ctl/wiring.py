"""authctl's composition root: key file, store, first-factor chain and engine from the
config, the same way the daemon builds them, so `authctl test` decides as it does.

Only this module (and `authd.app` for the daemon) names concrete classes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from argon2 import PasswordHasher

from authd.admin import AdminOps
from authd.auth.engine import Engine
from authd.auth.interfaces import FirstFactorBackend, Store
from authd.auth.ldap_primary import LdapBackend
from authd.auth.local import LocalUsers, hash_password, make_password_hasher
from authd.config.model import Config
from authd.core.errors import InvalidInput
from authd.crypto import Keyring
from authd.storage.sql import SqlStore

# authctl runs one action at a time: two connections cover a read during a write.
CTL_POOL_SIZE = 2


def build_backends(
    config: Config, store: Store, hasher: PasswordHasher, stack: ExitStack, *, local: bool
) -> list[FirstFactorBackend]:
    """The configured first-factor chain, in order (without local backends unless
    `local`); LDAP pools close with `stack`."""
    backends: list[FirstFactorBackend] = []
    for cfg in config.primary.backends:
        if cfg.type == "local":
            if local:
                backends.append(LocalUsers(store, hasher, name=cfg.name or "local"))
        else:
            ldap = LdapBackend(cfg)
            stack.callback(ldap.close)
            backends.append(ldap)
    return backends


@contextmanager
def open_admin(
    config: Config, clock: Callable[[], float] = time.time, *, with_engine: bool = False
) -> Iterator[AdminOps]:
    """AdminOps on the configured store, closed on exit.

    The key file is created (0600) when missing, as the daemon does on first start, so
    authctl can enroll users before the daemon ever ran. The engine (whose local backend
    computes a dummy argon2 hash up front) is built only `with_engine`, for `test`;
    other commands get the chain's directory backends alone, to recognise directory
    users on enrolment (LDAP connections open lazily, on first use).
    """
    if config.store.token_storage == "ldap":  # noqa: S105 - a mode name, not a secret
        # Writing tokens to the SQL store would hide them from a daemon reading LDAP.
        raise InvalidInput("store.token_storage: ldap is not supported by authctl yet")
    with ExitStack() as stack:
        keyring = Keyring.load_or_create(config.keys.file)
        store = SqlStore.open(config.store.url, keyring, pool_size=CTL_POOL_SIZE)
        stack.callback(store.close)
        hasher = make_password_hasher(config.local_users.password_hash)
        backends = build_backends(config, store, hasher, stack, local=with_engine)
        engine = Engine(config, store, backends, keyring.hash_key) if with_engine else None
        yield AdminOps(
            config,
            store,
            keyring,
            clock,
            engine=engine,
            backends=[b for b in backends if not isinstance(b, LocalUsers)],
            password_hasher=lambda password: hash_password(hasher, password),
        )
