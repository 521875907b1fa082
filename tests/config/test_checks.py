"""Cross-field rules: the ones a type alone cannot express."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from authd.config.model import Config

Load = Callable[[str], Config]
Problems = Callable[[str], list[tuple[int, str, str]]]
HEX = "ab" * 32


def test_pin_lengths(problems: Problems) -> None:
    """pin.min_length may not exceed pin.max_length."""
    assert problems("otp: {pin: {min_length: 9}}") == [
        (1, "otp.pin.min_length", "9 is more than otp.pin.max_length (8)")
    ]


def test_radius_client_needs_name_address_secret(problems: Problems) -> None:
    """An empty client names each missing piece at the client's line."""
    assert problems("radius:\n  clients:\n    - {}\n") == [
        (3, "radius.clients[0].address", "a client needs an address"),
        (3, "radius.clients[0].name", "a client needs a name"),
        (3, "radius.clients[0].secret", "a client needs a secret (secret or secret_file)"),
    ]


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("vpn.example.com", "'vpn.example.com' is not an IP address or CIDR"),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
        ("300.1.1.1", "'300.1.1.1' is not an IP address or CIDR"),
    ],
)
def test_radius_client_address(problems: Problems, address: str, message: str) -> None:
    """Addresses are IPs or CIDRs without host bits."""
    text = f"radius: {{clients: [{{name: a, address: '{address}', secret: s}}]}}"
    assert problems(text) == [(1, "radius.clients[0].address", message)]


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])
def test_radius_client_address_accepted(load: Load, address: str) -> None:
    """IPv4/IPv6 addresses and networks are fine."""
    text = f"radius: {{clients: [{{name: a, address: '{address}', secret: s}}]}}"
    assert load(text).radius.clients[0].address == address


def test_radius_client_duplicates(problems: Problems) -> None:
    """Client names are unique; the same network twice is a mistake."""
    found = problems(
        """
        radius:
          clients:
            - {name: a, address: 10.0.0.0/8, secret: s}
            - {name: a, address: 10.1.0.0/16, secret: s}
            - {name: c, address: 10.0.0.0/8, secret: s}
        """
    )
    assert found == [
        (5, "radius.clients[1].name", "duplicate client name 'a' (also radius.clients[0])"),
        (6, "radius.clients[2].address", "same address as radius.clients[0]"),
    ]


def test_listen_addresses(problems: Problems, load: Load) -> None:
    """Listen entries are IP:PORT, unique per listener; port 0 (kernel's pick) may repeat."""
    found = problems(
        """
        radius:
          listen: ["127.0.0.1:1812", "127.0.0.1:1812", "localhost:1812", "127.0.0.1:70000"]
        http:
          listen: ["[::1]:8080", "::1:8080"]
        """
    )
    assert found == [
        (3, "radius.listen[1]", "duplicate listen address (also radius.listen[0])"),
        (3, "radius.listen[2]", "'localhost' is not an IP address"),
        (3, "radius.listen[3]", "port 70000 is larger than 65535"),
        (5, "http.listen[1]", "'::1:8080' is not ADDRESS:PORT (IPv6: [ADDRESS]:PORT)"),
    ]
    config = load(
        "radius: {listen: ['127.0.0.1:0', '127.0.0.1:0']}\nhttp: {listen: ['127.0.0.1:1812']}"
    )
    assert config.radius.listen == ("127.0.0.1:0", "127.0.0.1:0")


def test_api_keys(problems: Problems, load: Load) -> None:
    """Exactly one of key_sha256/key_file, 64 hex digits, known scopes, unique names."""
    found = problems(
        f"""
        http:
          api_keys:
            - {{name: a, scopes: [validate]}}
            - {{name: b, key_sha256: "abc", scopes: [validate]}}
            - {{name: b, key_sha256: "{HEX}", scopes: [validate, root]}}
            - {{key_sha256: "{HEX}", scopes: []}}
        """
    )
    assert found == [
        (4, "http.api_keys[0].key_sha256", "give exactly one of key_sha256 or key_file"),
        (5, "http.api_keys[1].key_sha256", "must be 64 hex digits (a SHA-256)"),
        (6, "http.api_keys[2].name", "duplicate API key name 'b' (also http.api_keys[1])"),
        (
            6,
            "http.api_keys[2].scopes[1]",
            "'root' is not one of validate, admin, selfservice-admin",
        ),
        (7, "http.api_keys[3].name", "an API key needs a name"),
        (7, "http.api_keys[3].scopes", "needs at least one scope"),
    ]
    config = load(f'http: {{api_keys: [{{name: a, key_sha256: "{HEX}", scopes: [admin]}}]}}')
    assert config.http.api_keys[0].scopes == ("admin",)


def test_store_url_scheme(problems: Problems) -> None:
    """Only sqlite and postgresql; a URL with a password is never echoed."""
    found = problems('store: {url: "mysql://root:pa55w0rd@db/authd"}')
    assert found == [(1, "store.url", "must start with sqlite:/// or postgresql://")]
    assert problems('store: {url: "sqlite://relative.db"}') == [
        (1, "store.url", "write sqlite:///PATH (three slashes, then the path)")
    ]


LDAP = """
primary:
  backends:
    - type: ldap
      name: dir
{extra}
"""


def test_ldap_backend_needs_servers_and_base(problems: Problems) -> None:
    """An ldap backend without servers or user_search.base cannot work."""
    assert problems(LDAP.format(extra="")) == [
        (4, "primary.backends[0].servers", "an ldap backend needs at least one server"),
        (4, "primary.backends[0].user_search.base", "an ldap backend needs a search base DN"),
    ]


def test_ldap_backend_details(problems: Problems) -> None:
    """Server URLs, bind_dn/bind_password pairing and group search base are checked."""
    extra = """\
      servers: [{url: "http://ldap"}]
      user_search: {base: "dc=x"}
      bind_dn: "cn=svc,dc=x"
      groups: {mode: search}"""
    assert problems(LDAP.format(extra=extra)) == [
        (
            4,
            "primary.backends[0].bind_password",
            "bind_dn needs bind_password or bind_password_file",
        ),
        (
            6,
            "primary.backends[0].servers[0].url",
            "must look like ldap://host[:port] or ldaps://host[:port]",
        ),
        (9, "primary.backends[0].groups.base", "groups.mode search needs a base DN"),
    ]


def test_token_storage_ldap(problems: Problems, load: Load) -> None:
    """token_storage ldap needs an ldap backend with a token_attribute."""
    base = """
        store: {token_storage: ldap}
        primary:
          backends:
            - type: ldap
              servers: [{url: "ldap://127.0.0.1:389"}]
              user_search: {base: "dc=x"}
        """
    assert problems(base) == [
        (
            2,
            "store.token_storage",
            "ldap needs an ldap backend in primary.backends with token_attribute",
        )
    ]
    config = load(base + "      token_attribute: authdToken\n")
    assert config.primary.backends[0].token_attribute == "authdToken"


def test_backends_not_empty_and_unique(problems: Problems) -> None:
    """An empty chain authenticates nobody; duplicate names confuse /readyz and logs."""
    assert problems("primary: {backends: []}") == [
        (1, "primary.backends", "needs at least one first-factor backend")
    ]
    assert problems("primary: {backends: [{name: x}, {name: x}]}") == [
        (1, "primary.backends[1].name", "duplicate backend name 'x' (also primary.backends[0])")
    ]


def test_misc_checks(problems: Problems) -> None:
    """Policy groups, reply attributes, trusted proxies, TLS pairs, portal needs HTTP."""
    found = problems(
        """
        policy: {groups: [{enforcement: optional}]}
        radius:
          clients:
            - {name: a, address: 127.0.0.1, secret: s, reply_attributes: [{value: x}]}
        http:
          enabled: false
          trusted_proxies: ["10.0.0.0/8", "proxy"]
          tls: {}
        selfservice: {enabled: true, alias: "a/b"}
        """
    )
    assert found == [
        (2, "policy.groups[0].group", "needs a group name"),
        (5, "radius.clients[0].reply_attributes[0].attribute", "needs an attribute name"),
        (8, "http.trusted_proxies[1]", "'proxy' is not an IP address or CIDR"),
        (9, "http.tls.cert_file", "TLS needs cert_file and key_file"),
        (9, "http.tls.key_file", "TLS needs cert_file and key_file"),
        (10, "selfservice.alias", "use only letters, digits, - and _"),
        (10, "selfservice.enabled", "the portal needs http.enabled: true"),
    ]


def test_existing_files_must_exist(problems: Problems) -> None:
    """Files authd reads at start (TLS, CA, dictionary) must exist; keys.file need not."""
    found = problems(
        """
        keys: {file: not-yet/keys.json}
        radius: {dictionary: no-such-dictionary}
        """
    )
    assert len(found) == 1
    assert found[0][:2] == (3, "radius.dictionary")
    assert found[0][2].startswith("no such file: /") and found[0][2].endswith("no-such-dictionary")


def test_ldap_name_attribute(problems: Problems, load: Load) -> None:
    """The user's name attribute defaults to the first one the filter compares with
    {user}; one the filter does not compare (or a filter that compares none) is refused,
    since an entry could not be found again by its own name."""
    servers = '      servers: [{url: "ldap://ldap"}]\n'
    ok = (
        servers
        + '      user_search: {base: "dc=x", filter: "(|(sAMAccountName={user})(mail={user}))"}'
    )
    assert load(LDAP.format(extra=ok)).primary.backends[0].user_search.name_attribute == ""
    wrong = (
        servers + '      user_search: {base: "dc=x", filter: "(sAMAccountName={user})",'
        " name_attribute: userPrincipalName}"
    )
    assert problems(LDAP.format(extra=wrong)) == [
        (
            7,
            "primary.backends[0].user_search.name_attribute",
            "the filter must compare 'userPrincipalName' with {user},"
            " e.g. (userPrincipalName={user})",
        )
    ]
    none = servers + '      user_search: {base: "dc=x", filter: "(cn=*{user}*)"}'
    assert problems(LDAP.format(extra=none)) == [
        (
            7,
            "primary.backends[0].user_search.filter",
            "compares no attribute with {user}: set user_search.name_attribute to one it does",
        )
    ]


def test_realms(problems: Problems, load: Load) -> None:
    """RADIUS client and HTTP realms are plain names; both are loaded as given."""
    client = "radius: {clients: [{name: a, address: 10.0.0.1, secret: s, realms: %s}]}"
    assert load(client % "[CORP, corp.example.com]").radius.clients[0].realms == (
        "CORP",
        "corp.example.com",
    )
    assert problems(client % "['a@b']") == [
        (1, "radius.clients[0].realms[0]", "a realm name contains no '\\' and no '@'")
    ]
    assert problems("http: {realms: [' CORP']}") == [
        (1, "http.realms[0]", "a realm is a non-empty name without surrounding spaces")
    ]
