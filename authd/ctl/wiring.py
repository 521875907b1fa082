"""authctl's access to the daemon's state: the same `authd.app.build_core` the daemon
uses, so `authctl test` decides exactly as the daemon does."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from authd.admin import AdminOps
from authd.app import build_core
from authd.config.model import Config
from authd.portability.ops import PortabilityOps, portability_ops

# authctl runs one action at a time: two connections cover a read during a write.
CTL_POOL_SIZE = 2


@contextmanager
def open_admin(config: Config, clock: Callable[[], float] = time.time) -> Iterator[AdminOps]:
    """AdminOps on the configured store, closed on exit.

    The key file is created (0600) when missing, as the daemon does on first start, so
    authctl can enroll users before the daemon ever ran. With `token_storage: ldap` the
    store is the daemon's too (token records in the directory, the rest in SQL).
    """
    core = build_core(config, clock, pool_size=CTL_POOL_SIZE)
    try:
        yield core.admin
    finally:
        core.close()


@contextmanager
def open_portability(
    config: Config, clock: Callable[[], float] = time.time
) -> Iterator[PortabilityOps]:
    """Export, import and token import on the configured store (SQL, or tokens in the
    directory with `token_storage: ldap`), closed on exit."""
    core = build_core(config, clock, pool_size=CTL_POOL_SIZE)
    try:
        yield portability_ops(config, core.store, core.keyring, clock)
    finally:
        core.close()
