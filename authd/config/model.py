"""The parsed configuration: frozen dataclasses, one per YAML section.

Every field has a safe default, so an empty file is a valid (loopback-only) config.
`authd.config.parse` builds these from YAML, driven by the field types and the
`meta` helpers below; nothing else in authd reads YAML. Durations are float seconds
(`None` where the YAML says `never`). Secrets are already resolved from `*_file` keys
and are wrapped in `Secret` so that a repr or a log line never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


class Secret:
    """A secret string whose repr and str never reveal it (STYLE pattern 8)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it is used (HMAC, bind, ...)."""
        return self._value

    def reveal_bytes(self) -> bytes:
        return self._value.encode("utf-8")

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __len__(self) -> int:
        return len(self._value.encode("utf-8"))


def meta(
    doc: str = "",
    *,
    duration: bool = False,
    secret_file: bool = False,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    never: bool = False,
    path: str = "",
    internal: bool = False,
) -> dict[str, Any]:
    """Field metadata read by the parser.

    duration: YAML gives `30s`/`10m`/`90d` (or a number of seconds); `never` allowed
    when never=True and then the value is None. secret_file: the key `NAME` may instead be
    given as `NAME_file` (path to a file holding the secret; trailing newline stripped).
    path: the value is a file path, resolved against the config file's folder; "plain"
    (may not exist yet), "existing" (must exist), "private" (must exist, mode 0600).
    internal: set by the loader, never read from YAML.
    """
    return {
        "doc": doc,
        "duration": duration,
        "secret_file": secret_file,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "never": never,
        "path": path,
        "internal": internal,
    }


OtpMode = Literal["inline", "challenge", "auto"]
FirstFactorMode = Literal["chain", "none"]
TokenStorage = Literal["db", "ldap"]
Enforcement = Literal["required", "optional"]
PinPosition = Literal["before", "after"]


# ---------------------------------------------------------------- store & keys
# SQLite: the group-committing writer keeps one connection of store.pool_size for good
# (storage/hot_path.py); reads and other writes share the others.
SQLITE_MIN_POOL = 2
SQLITE_POOL_PROBLEM = (
    f"SQLite needs at least {SQLITE_MIN_POOL}: the writer keeps one connection, "
    "reads and other writes share the others"
)
# RADIUS clients give up after ~3 s (NetScaler: 3 s; radclient: 3 s a try): a request
# must be answered, and rejected if need be, well within that.
DEFAULT_STORE_TIMEOUT = 2.0
DEFAULT_POOL_SIZE = 4
# MiB of SQLite page cache per connection. More does not help random users of a large
# store (docs/PERFORMANCE.md, "Population"); the memory map below does.
DEFAULT_CACHE_MIB = 64
# MiB of the database file read through a memory map: SQLite's largest (2 GiB less 64
# KiB, in whole MiB). Pages within the map come from the OS page cache that every
# connection and process shares; pages beyond it are read with a copy into the reading
# connection's own page cache. The map never exceeds the file: a smaller database is
# simply mapped whole.
DEFAULT_MMAP_MIB = 2047


@dataclass(frozen=True)
class StoreConfig:
    url: str = field(default="sqlite:////var/lib/authd/authd.db", metadata=meta(
        "sqlite:///PATH (embedded) or postgresql://user@host/db (several nodes)"))
    password: Secret | None = field(default=None, metadata=meta(
        "PostgreSQL password, kept out of the URL (or password_file)", secret_file=True))
    pool_size: int = field(default=DEFAULT_POOL_SIZE, metadata=meta(
        "database threads/connections", minimum=1, maximum=64))
    timeout: float = field(default=DEFAULT_STORE_TIMEOUT, metadata=meta(
        "longest wait for the store: each connect, statement, lock or busy wait, and a "
        "request's store waits in all, queueing included; older requests are rejected "
        "undecided", duration=True, minimum=0.1, maximum=60))
    token_storage: TokenStorage = field(default="db", metadata=meta(
        "where OATH token records live", choices=("db", "ldap")))
    cache_size: int = field(default=DEFAULT_CACHE_MIB, metadata=meta(
        "SQLite page cache per database connection, MiB (unused with PostgreSQL)",
        minimum=1, maximum=65536))
    mmap_size: int = field(default=DEFAULT_MMAP_MIB, metadata=meta(
        "SQLite: MiB of the database file read through a memory map, shared by every "
        "connection (0: off; unused with PostgreSQL)", minimum=0, maximum=2047))


@dataclass(frozen=True)
class KeysConfig:
    file: str = field(default="/var/lib/authd/keys.json", metadata=meta(
        "data-key file, created 0600 on first start", path="plain"))


# ---------------------------------------------------------------- OTP policy
@dataclass(frozen=True)
class TotpConfig:
    skew: float = field(default=30.0, metadata=meta(
        "accept codes this far before/after now", duration=True, minimum=0, maximum=300))
    resync_window: float = field(default=12 * 3600.0, metadata=meta(
        "how far resync searches", duration=True, minimum=0, maximum=7 * 86400))


@dataclass(frozen=True)
class HotpConfig:
    look_ahead: int = field(default=10, metadata=meta(
        "counter values accepted ahead of the expected one", minimum=0, maximum=1000))
    resync_window: int = field(default=1000, metadata=meta(
        "counter values searched by resync", minimum=1, maximum=100000))


@dataclass(frozen=True)
class LockoutConfig:
    max_attempts: int = field(default=5, metadata=meta(
        "consecutive second-factor failures that lock the user", minimum=1, maximum=1000))
    auto_unlock_after: float | None = field(default=600.0, metadata=meta(
        "lock duration; `never` keeps users locked until an operator unlocks",
        duration=True, never=True, minimum=1))


@dataclass(frozen=True)
class BackupCodesConfig:
    count: int = field(default=10, metadata=meta("codes per set", minimum=1, maximum=50))


@dataclass(frozen=True)
class PinConfig:
    position: PinPosition = field(default="before", metadata=meta(
        "PIN typed before or after the OTP", choices=("before", "after")))
    min_length: int = field(default=4, metadata=meta(minimum=1, maximum=64))
    max_length: int = field(default=8, metadata=meta(minimum=1, maximum=64))
    allow_trivial: bool = field(default=False, metadata=meta(
        "accept PINs like 1234 or 1111"))


@dataclass(frozen=True)
class OtpConfig:
    issuer: str = field(default="authd", metadata=meta("issuer shown in authenticator apps"))
    default_digits: int = field(default=6, metadata=meta(minimum=6, maximum=8))
    totp: TotpConfig = field(default_factory=TotpConfig)
    hotp: HotpConfig = field(default_factory=HotpConfig)
    lockout: LockoutConfig = field(default_factory=LockoutConfig)
    backup_codes: BackupCodesConfig = field(default_factory=BackupCodesConfig)
    pin: PinConfig = field(default_factory=PinConfig)


@dataclass(frozen=True)
class GroupPolicy:
    group: str = field(default="", metadata=meta("group name"))
    enforcement: Enforcement = field(default="required", metadata=meta(
        choices=("required", "optional")))


@dataclass(frozen=True)
class PolicyConfig:
    enforcement: Enforcement = field(default="required", metadata=meta(
        "users without an active token: reject (required) or first factor alone (optional)",
        choices=("required", "optional")))
    groups: tuple[GroupPolicy, ...] = field(default=(), metadata=meta(
        "per-group enforcement, first match wins"))


# ---------------------------------------------------------------- first factor
@dataclass(frozen=True)
class LdapServer:
    url: str = field(default="", metadata=meta("ldap://host:389 or ldaps://host:636"))


@dataclass(frozen=True)
class UserSearch:
    base: str = field(default="", metadata=meta("search base DN"))
    filter: str = field(default="(uid={user})", metadata=meta(
        "filter template; {user} is escaped per RFC 4515"))
    name_attribute: str = field(default="", metadata=meta(
        "the entry's attribute that names the user in authd (store, tokens, audit); "
        "empty: the first attribute the filter compares with {user}"))
    scope: Literal["sub", "one"] = field(default="sub", metadata=meta(choices=("sub", "one")))


@dataclass(frozen=True)
class GroupSearch:
    mode: Literal["memberof", "search"] = field(default="memberof", metadata=meta(
        choices=("memberof", "search")))
    base: str = field(default="", metadata=meta("group search base (mode: search)"))
    filter: str = field(default="(|(member={dn})(uniqueMember={dn}))", metadata=meta(
        "group filter template; {dn} and {user} are escaped"))
    name_attribute: str = field(default="cn", metadata=meta())
    nested: bool = field(default=False, metadata=meta(
        "follow nested groups (AD matching rule 1.2.840.113556.1.4.1941)"))
    cache_ttl: float = field(default=60.0, metadata=meta(duration=True, minimum=0))


@dataclass(frozen=True)
class PrimaryBackend:
    type: Literal["local", "ldap"] = field(default="local", metadata=meta(
        choices=("local", "ldap")))
    name: str = field(default="", metadata=meta("label for logs and /readyz"))
    # ldap only
    servers: tuple[LdapServer, ...] = field(default=(), metadata=meta())
    start_tls: bool = field(default=False, metadata=meta())
    ca_file: str = field(default="", metadata=meta("CA bundle for ldaps/StartTLS",
                                                   path="existing"))
    verify_certificates: bool = field(default=True, metadata=meta())
    bind_dn: str = field(default="", metadata=meta("service account DN"))
    bind_password: Secret | None = field(default=None, metadata=meta(secret_file=True))
    user_search: UserSearch = field(default_factory=UserSearch)
    groups: GroupSearch = field(default_factory=GroupSearch)
    connect_timeout: float = field(default=1.0, metadata=meta(duration=True, minimum=0.05))
    # connect + operation must stay well under NetScaler's 3 s RADIUS timeout even when
    # one server hangs and the next answers.
    operation_timeout: float = field(default=1.0, metadata=meta(duration=True, minimum=0.05))
    # One deadline over a whole authenticate()/lookup(), across servers and operations:
    # per-wait timeouts alone add up (two hung servers, search then bind) past 3 s.
    request_timeout: float = field(default=2.5, metadata=meta(duration=True, minimum=0.1))
    server_backoff: float = field(default=30.0, metadata=meta(duration=True, minimum=0))
    # One connection per auth thread (auth_threads), so binds never queue for a slot.
    pool_size: int = field(default=8, metadata=meta(minimum=1, maximum=64))
    token_attribute: str = field(default="", metadata=meta(
        "multi-valued attribute for token_storage: ldap"))
    profile_attributes: dict[str, str] = field(default_factory=dict, metadata=meta(
        "email/phone/first_name/last_name -> directory attribute"))


@dataclass(frozen=True)
class PrimaryConfig:
    failmode: Literal["closed", "open"] = field(default="closed", metadata=meta(
        "when every directory is unreachable: reject (closed) or skip the first factor (open)",
        choices=("closed", "open")))
    backends: tuple[PrimaryBackend, ...] = field(
        default=(PrimaryBackend(type="local", name="local"),), metadata=meta(
            "ordered first-factor chain; the first backend that knows the user decides"))


@dataclass(frozen=True)
class PasswordHashConfig:
    """argon2id parameters for local user passwords (RFC 9106 second recommended set)."""

    time_cost: int = field(default=3, metadata=meta(minimum=1, maximum=20))
    memory_cost_kib: int = field(default=65536, metadata=meta(minimum=8192, maximum=4194304))
    parallelism: int = field(default=1, metadata=meta(minimum=1, maximum=16))


@dataclass(frozen=True)
class LocalUsersConfig:
    password_hash: PasswordHashConfig = field(default_factory=PasswordHashConfig)


# ---------------------------------------------------------------- RADIUS
@dataclass(frozen=True)
class ReplyAttribute:
    """One attribute sent on Access-Accept to members of `group` (`*` = everyone)."""

    group: str = field(default="*", metadata=meta())
    attribute: str = field(default="", metadata=meta(
        "dictionary name (Class, Filter-Id, Fortinet-Group-Name, ...) "
        "or `netscaler-group` for the configurable NetScaler attribute"))
    value: str = field(default="", metadata=meta("value; {group} is the group's name"))


@dataclass(frozen=True)
class NetscalerGroupAttribute:
    vendor_id: int = field(default=3845, metadata=meta(minimum=1, maximum=16777215))
    attribute: int = field(default=16, metadata=meta(minimum=1, maximum=255))
    prefix: str = field(default="", metadata=meta())
    separator: str = field(default=",", metadata=meta())


@dataclass(frozen=True)
class RadiusClient:
    name: str = field(default="", metadata=meta("client name for logs and audit"))
    address: str = field(default="", metadata=meta("source address or CIDR"))
    secret: Secret | None = field(default=None, metadata=meta(secret_file=True))
    require_message_authenticator: bool = field(default=True, metadata=meta())
    first_factor: FirstFactorMode = field(default="chain", metadata=meta(
        choices=("chain", "none")))
    otp_mode: OtpMode = field(default="inline", metadata=meta(
        choices=("inline", "challenge", "auto")))
    reply_attributes: tuple[ReplyAttribute, ...] = field(default=(), metadata=meta())
    realms: tuple[str, ...] = field(default=(), metadata=meta(
        "realms stripped from User-Name (REALM\\user, user@REALM); other realms match no user"))


@dataclass(frozen=True)
class RadsecClient(RadiusClient):
    """A RadSec client: matched by its certificate, never by address; the shared secret
    is the fixed `radsec` (RFC 6614 §2.3), so `address` and `secret` stay empty."""

    ca_file: str = field(default="", metadata=meta(
        "the client certificate must chain to this CA (PEM); empty = any CA of "
        "radius.tls.ca_file", path="existing"))
    subject: str = field(default="", metadata=meta(
        "RFC 4514 subject the certificate must carry, e.g. CN=nas1,O=Example"))
    san: tuple[str, ...] = field(default=(), metadata=meta(
        "DNS:name, IP:address, URI:uri or email:address; the certificate must carry one"))
    fingerprint_sha256: tuple[str, ...] = field(default=(), metadata=meta(
        "SHA-256 of the certificate (hex, colons allowed); one must match"))


@dataclass(frozen=True)
class RadsecConfig:
    """RADIUS over TLS (RFC 6614), RADIUS/1.1 by ALPN (RFC 9765)."""

    listen: tuple[str, ...] = field(default=("127.0.0.1:2083",), metadata=meta(
        "address:port, one TCP socket each"))
    cert_file: str = field(default="", metadata=meta(
        "server certificate (PEM, chain after the leaf)", path="existing"))
    key_file: str = field(default="", metadata=meta("server key (PEM)", path="private"))
    ca_file: str = field(default="", metadata=meta(
        "CAs that issue client certificates (PEM bundle)", path="existing"))
    clients: tuple[RadsecClient, ...] = field(default=(), metadata=meta())
    idle_timeout: float = field(default=120.0, metadata=meta(
        "close a connection with nothing in flight after this long", duration=True,
        minimum=1, maximum=86400))
    handshake_timeout: float = field(default=10.0, metadata=meta(
        "close a connection whose TLS handshake takes longer", duration=True, minimum=1,
        maximum=300))
    max_connections: int = field(default=256, metadata=meta(
        "open connections per process; more are closed at once", minimum=1,
        maximum=65536))
    max_in_flight: int = field(default=256, metadata=meta(
        "requests per connection awaiting their reply; past it the connection is not "
        "read until replies go out", minimum=1, maximum=4096))


@dataclass(frozen=True)
class RadiusConfig:
    enabled: bool = field(default=True, metadata=meta())
    listen: tuple[str, ...] = field(default=("127.0.0.1:1812",), metadata=meta(
        "address:port, one socket each"))
    dictionary: str = field(default="", metadata=meta(
        "RADIUS dictionary file; empty = the one shipped with authd", path="existing"))
    clients: tuple[RadiusClient, ...] = field(default=(), metadata=meta())
    duplicate_window: float = field(default=30.0, metadata=meta(duration=True, minimum=0))
    reject_delay: float = field(default=1.0, metadata=meta(duration=True, minimum=0,
                                                           maximum=10))
    challenge_ttl: float = field(default=120.0, metadata=meta(duration=True, minimum=5,
                                                              maximum=3600))
    challenge_message: str = field(default="Enter your one-time code", metadata=meta())
    netscaler_group: NetscalerGroupAttribute = field(default_factory=NetscalerGroupAttribute)
    workers: int = field(default=1, metadata=meta("processes sharing the port (SO_REUSEPORT)",
                                                  minimum=1, maximum=64))
    pin_workers: bool = field(default=True, metadata=meta(
        "with workers > 1, pin process i to the i-th allowed core (main process: the first) "
        "when there are at least `workers` cores"))
    receive_buffer: int = field(default=1 << 20, metadata=meta("SO_RCVBUF bytes",
                                                               minimum=65536))
    tls: RadsecConfig | None = field(default=None, metadata=meta(
        "RadSec listener (TCP, default port 2083); off unless set"))


# ---------------------------------------------------------------- HTTP
@dataclass(frozen=True)
class ApiKey:
    name: str = field(default="", metadata=meta())
    key_sha256: str = field(default="", metadata=meta("hex SHA-256 of the key"))
    key_file: str = field(default="", metadata=meta("file holding the key itself, 0600",
                                                    path="private"))
    scopes: tuple[str, ...] = field(default=("validate",), metadata=meta(
        "validate, admin, selfservice-admin",
        choices=("validate", "admin", "selfservice-admin")))


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str = field(default="", metadata=meta(path="existing"))
    key_file: str = field(default="", metadata=meta(path="existing"))
    client_ca_file: str = field(default="", metadata=meta(
        "require client certificates signed by this CA", path="existing"))


@dataclass(frozen=True)
class RateLimit:
    rate: float = field(default=10.0, metadata=meta("tokens per second", minimum=0))
    burst: int = field(default=20, metadata=meta(minimum=1))


@dataclass(frozen=True)
class RateLimitsConfig:
    per_source: RateLimit = field(default_factory=lambda: RateLimit(rate=50.0, burst=100))
    per_user: RateLimit = field(default_factory=lambda: RateLimit(rate=1.0, burst=10))
    failure_delay: float = field(default=1.0, metadata=meta(
        "after a user's n-th failure in a row, wait failure_delay * 2**(n-1) before the "
        "next HTTP attempt (escalating delay before the lockout)", duration=True, minimum=0))
    failure_delay_max: float = field(default=60.0, metadata=meta(
        "ceiling of that delay", duration=True, minimum=0))


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = field(default=True, metadata=meta())
    listen: tuple[str, ...] = field(default=("127.0.0.1:8080",), metadata=meta())
    tls: TlsConfig | None = field(default=None, metadata=meta())
    api_keys: tuple[ApiKey, ...] = field(default=(), metadata=meta())
    max_body: int = field(default=65536, metadata=meta(minimum=1024))
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    trusted_proxies: tuple[str, ...] = field(default=(), metadata=meta(
        "CIDRs whose X-Forwarded-For is believed"))
    realms: tuple[str, ...] = field(default=(), metadata=meta(
        "realms stripped from `user` (REALM\\user, user@REALM); other realms match no user"))
    workers: int = field(default=1, metadata=meta(
        "processes sharing the HTTP port (SO_REUSEPORT)", minimum=1, maximum=64))
    # Slowloris: without these, idle connections dribbling a header line now and then
    # hold every file descriptor and no real request can connect.
    read_timeout: float = field(default=10.0, metadata=meta(
        "a client must send a whole request (line, headers, body) within this time of "
        "connecting, or of its first byte on a kept-alive connection; slower ones are closed",
        duration=True, minimum=0.1, maximum=300))
    max_connections: int = field(default=512, metadata=meta(
        "open HTTP connections per process; at the cap the oldest idle or still-sending one "
        "is closed for a new one. Keep it well under the open-files limit (LimitNOFILE)",
        minimum=1, maximum=1_000_000))
    max_connections_per_source: int = field(default=32, metadata=meta(
        "open HTTP connections per client address (trusted_proxies exempt)",
        minimum=1, maximum=1_000_000))


# ---------------------------------------------------------------- portal, logging, audit
@dataclass(frozen=True)
class SelfServiceGroups:
    allow: tuple[str, ...] = field(default=("*",), metadata=meta())
    deny: tuple[str, ...] = field(default=(), metadata=meta())


PORTAL_ACTIONS = (
    "enroll", "register", "backup_codes", "pin", "resync", "revoke", "password", "profile",
    "history",
)
# Known but off unless listed: a new login name changes what every client must send.
PORTAL_ACTIONS_OFF = ("login_name",)


@dataclass(frozen=True)
class SelfServiceConfig:
    enabled: bool = field(default=False, metadata=meta())
    alias: str = field(default="default", metadata=meta("URL part: /selfservice/<alias>/"))
    public_url: str = field(default="", metadata=meta("address shown to users"))
    groups: SelfServiceGroups = field(default_factory=SelfServiceGroups)
    # Offered in this order; an action not listed is neither shown nor served.
    actions: tuple[str, ...] = field(default=PORTAL_ACTIONS, metadata=meta(
        "portal actions in display order: " + ", ".join(PORTAL_ACTIONS + PORTAL_ACTIONS_OFF)))
    token_types: tuple[str, ...] = field(default=("totp", "hotp"), metadata=meta(
        "token types users may enroll: totp, hotp"))
    pending_ttl: float = field(default=600.0, metadata=meta(
        "an enrolled token not confirmed with a code within this time is dropped",
        duration=True, minimum=60, maximum=86400))
    session_idle: float = field(default=900.0, metadata=meta(
        "a portal session ends after this long without a request",
        duration=True, minimum=60, maximum=86400))
    session_max: float = field(default=28800.0, metadata=meta(
        "a portal session ends this long after log-in, active or not",
        duration=True, minimum=60, maximum=7 * 86400))
    listen: tuple[str, ...] = field(default=(), metadata=meta(
        "serve the portal only on these of http.listen's addresses (empty: on all)"))
    show_qr: bool = field(default=True, metadata=meta(
        "show the enrollment QR code (off: secret and otpauth link only)"))
    enroll_message: str = field(default="", metadata=meta(
        "the operator's note on the enroll page (e.g. which app to use)"))
    denied_message: str = field(default=(
        "You may not enroll tokens yourself. Please contact your help desk."), metadata=meta(
        "shown instead of the enroll page to users selfservice.groups leaves out"))
    recovery_notify: str = field(default="", metadata=meta(
        "mail this operator address on each new restore-access request (empty: no mail)"))
    recovery_grant_ttl: float = field(default=86400.0, metadata=meta(
        "an approved lost-token request lets the user into the portal once within this time",
        duration=True, minimum=300, maximum=30 * 86400))


@dataclass(frozen=True)
class SmtpConfig:
    """Outgoing mail (reminders); no mail at all while `host` is empty."""

    host: str = field(default="", metadata=meta("mail server; empty: authd sends no mail"))
    port: int = field(default=587, metadata=meta(minimum=1, maximum=65535))
    security: Literal["starttls", "tls", "none"] = field(default="starttls", metadata=meta(
        "starttls (submission, 587), tls (implicit, 465) or none (loopback relays only)",
        choices=("starttls", "tls", "none")))
    username: str = field(default="", metadata=meta("empty: no SMTP AUTH"))
    password: Secret | None = field(default=None, metadata=meta(
        "SMTP AUTH password (or password_file)", secret_file=True))
    from_address: str = field(default="", metadata=meta("the From: of authd's mail"))
    timeout: float = field(default=10.0, metadata=meta(
        "per connection and command", duration=True, minimum=0.1, maximum=300))


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = field(default="info", metadata=meta(
        choices=("debug", "info", "warning", "error")))
    format: Literal["text", "json"] = field(default="text", metadata=meta(
        choices=("text", "json")))


@dataclass(frozen=True)
class UnusualSigninConfig:
    enabled: bool = field(default=True, metadata=meta(
        "flag successful sign-ins from a new network, client or hour (audit + metric)"))
    learn: int = field(default=5, metadata=meta(
        "successful sign-ins a user needs before anything is flagged", minimum=1, maximum=1000))
    max_users: int = field(default=100_000, metadata=meta(
        "users whose habits are kept in memory, least recently seen dropped first (about "
        "1.5 KB each at most; a restart applies a change)", minimum=1, maximum=100_000_000))


@dataclass(frozen=True)
class AuditConfig:
    retention: float | None = field(default=400 * 86400.0, metadata=meta(
        "keep audit rows this long (`never`: forever); older ones are pruned",
        duration=True, never=True, minimum=86400))
    prune_interval: float = field(default=3600.0, metadata=meta(
        "how often the daemon prunes", duration=True, minimum=60, maximum=7 * 86400))
    hash_chain: bool = field(default=False, metadata=meta(
        "HMAC chain over audit rows; `authctl audit verify` detects edits and deletions"))
    unusual_signin: UnusualSigninConfig = field(default_factory=UnusualSigninConfig)


@dataclass(frozen=True)
class Config:
    """The whole configuration; `source` is the file it came from."""

    store: StoreConfig = field(default_factory=StoreConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    otp: OtpConfig = field(default_factory=OtpConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    primary: PrimaryConfig = field(default_factory=PrimaryConfig)
    local_users: LocalUsersConfig = field(default_factory=LocalUsersConfig)
    radius: RadiusConfig = field(default_factory=RadiusConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    selfservice: SelfServiceConfig = field(default_factory=SelfServiceConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    auth_threads: int = field(default=8, metadata=meta(
        "threads running decisions (first factor, store)", minimum=1, maximum=256))
    source: str = field(default="<defaults>", metadata=meta(internal=True), compare=False)
