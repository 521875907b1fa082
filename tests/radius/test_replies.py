"""Access-Accept attributes mapped from groups."""

from __future__ import annotations

import pytest

from authd.config.model import NetscalerGroupAttribute, ReplyAttribute
from authd.radius import codec
from authd.radius.replies import build_reply_plan, netscaler_attributes
from tests.fixtures.radius import GROUP_REPLIES

DICT = codec.RadiusDictionary()
NS = NetscalerGroupAttribute(vendor_id=3845, attribute=16, prefix="CTXSUserGroups=", separator=",")


def _vsa(vendor: int, typ: int, value: bytes) -> bytes:
    return codec.vendor_attribute(vendor, typ, value)


def test_group_rules_map_to_encoded_attributes() -> None:
    """Class/Filter-Id per group, `*` rules with {group} once per group, NetScaler's
    groups joined into one VSA, rules for other groups skipped."""
    plan = build_reply_plan(GROUP_REPLIES, NS, DICT)
    got = plan.attributes(("vpn-users", "admins"))
    assert got == [
        codec.attribute(25, b"vpn"),
        codec.attribute(11, b"admin-acl"),
        _vsa(12356, 1, b"vpn-users"),
        _vsa(12356, 1, b"admins"),
        _vsa(3845, 16, b"CTXSUserGroups=vpn-users,admins"),
    ]


def test_user_without_groups_gets_only_static_everyone_rules() -> None:
    """With no groups, only `*` rules without {group} apply."""
    rules = (
        ReplyAttribute(group="*", attribute="Class", value="all"),
        ReplyAttribute(group="*", attribute="Filter-Id", value="{group}"),
    )
    assert build_reply_plan(rules, NS, DICT).attributes(()) == [codec.attribute(25, b"all")]


def test_netscaler_groups_split_over_vsas_that_each_parse() -> None:
    """Many groups overflow 247 octets: several VSAs, each with the prefix, none cut."""
    groups = [f"group-{i:03d}-" + "x" * 20 for i in range(30)]
    out = netscaler_attributes(NS, groups)
    assert len(out) > 1
    seen: list[str] = []
    for tlv in out:
        assert len(tlv) <= 255
        value = tlv[8:].decode()
        assert value.startswith("CTXSUserGroups=")
        seen += value[len("CTXSUserGroups=") :].split(",")
    assert seen == groups


@pytest.mark.parametrize("name", ["No-Such", "Message-Authenticator", "Proxy-State", "State"])
def test_unknown_or_reserved_attribute_is_a_config_error(name: str) -> None:
    """Unknown names, and attributes authd manages itself, are refused at load."""
    with pytest.raises(ValueError, match=name):
        build_reply_plan((ReplyAttribute(group="g", attribute=name, value="v"),), NS, DICT)


def test_unencodable_value_is_a_config_error() -> None:
    """An integer attribute with a non-numeric value is refused at load."""
    with pytest.raises(ValueError, match="Session-Timeout"):
        build_reply_plan(
            (ReplyAttribute(group="g", attribute="Session-Timeout", value="soon"),), NS, DICT
        )
