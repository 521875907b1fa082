"""The checks that need more than the YAML: each part builds its state from the config
the way it does at start and on reload (dictionary and reply attributes, RADIUS client
table, API key files, TLS files, the key file, LDAP settings), so `check-config`,
`serve` and a SIGHUP reload refuse the same files and "OK" means the daemon will start.

`load(path)` is the one entry point: the YAML checks of `authd.config.parse` plus these.
"""

from __future__ import annotations

from collections.abc import Iterator

from authd.auth.ldap_primary import LdapBackend
from authd.config.model import Config, HttpConfig, PrimaryConfig, RadiusConfig
from authd.config.parse import load_config
from authd.core.errors import KeyFileError
from authd.crypto import Keyring
from authd.radius.clients import ClientConfigError, build_client
from authd.radius.service import load_dictionary
from authd.rest.apikeys import ApiKeyConfigError, ApiKeyRing
from authd.rest.tls import TlsConfigError, context_factory

Problem = tuple[str, str]  # (key path, what is wrong)


def load(path: str) -> Config:
    """The config at `path`, checked as `serve` will use it; ConfigErrors otherwise."""
    return load_config(path, checks=(problems,))


def problems(config: Config) -> Iterator[Problem]:
    """Every part's problem with `config`; messages name keys and files, never secrets."""
    try:
        Keyring.check(config.keys.file)
    except KeyFileError as exc:
        yield ("keys.file", str(exc))
    yield from _primary(config.primary)
    if config.radius.enabled:
        yield from _radius(config.radius)
    if config.http.enabled:
        yield from _http(config.http)


def _primary(primary: PrimaryConfig) -> Iterator[Problem]:
    for i, backend in enumerate(primary.backends):
        if backend.type != "ldap" or not backend.servers:
            continue
        try:
            LdapBackend(backend).directory.close()  # connects lazily: nothing to undo
        except Exception as exc:  # noqa: BLE001 (ldap3's TLS set-up raises its own kinds)
            yield (f"primary.backends[{i}]", f"unusable LDAP settings ({type(exc).__name__})")


def _radius(radius: RadiusConfig) -> Iterator[Problem]:
    try:
        dictionary = load_dictionary(radius.dictionary)
    except ValueError as exc:
        yield ("radius.dictionary", str(exc))
        return
    for i, client in enumerate(radius.clients):
        if client.secret is None or not client.name:
            continue  # already reported by the YAML checks
        try:
            build_client(client, radius, dictionary)
        except ClientConfigError as exc:
            yield (f"radius.clients[{i}]", str(exc))


def _http(http: HttpConfig) -> Iterator[Problem]:
    for i, key in enumerate(http.api_keys):
        try:
            ApiKeyRing.from_config([key])
        except ApiKeyConfigError as exc:
            yield (f"http.api_keys[{i}]", str(exc))
    if http.tls is not None and http.tls.cert_file and http.tls.key_file:
        try:
            context_factory(http.tls)
        except TlsConfigError as exc:
            yield ("http.tls", str(exc))
