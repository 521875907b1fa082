"""Access-Accept attributes mapped from a user's groups (Class, Filter-Id, vendor VSAs).

The mapping is resolved against the dictionary once per (re)load, so a misspelt
attribute name fails at start-up instead of on the first accept; per request only the
`{group}` substitution and encoding remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from authd.config.model import NetscalerGroupAttribute, ReplyAttribute
from authd.radius.codec import AttributeDef, RadiusDictionary, vendor_attribute

NETSCALER = "netscaler-group"
ALL_GROUPS = "*"
_VSA_VALUE_MAX = 247  # 253 minus vendor id (4) and vendor type/length (2)


@dataclass(frozen=True, slots=True)
class _Rule:
    group: str
    attr: AttributeDef | None  # None: the NetScaler group attribute
    value: str
    # The TLVs per group name, encoded on first use: pyrad's encoders cost microseconds
    # and the set of group names is small. Bounded so odd directories cannot grow it.
    cache: dict[str, bytes | None] = field(default_factory=dict, compare=False)

    def encoded(self, group: str) -> bytes | None:
        """The TLV for `group` (None when the value cannot be encoded)."""
        try:
            return self.cache[group]
        except KeyError:
            pass
        assert self.attr is not None
        try:
            tlv: bytes | None = self.attr.encode(self.value.replace("{group}", group))
        except ValueError:
            tlv = None
        if len(self.cache) < 1024:
            self.cache[group] = tlv
        return tlv


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """The reply-attribute rules of one client, checked and ready to apply."""

    rules: tuple[_Rule, ...] = ()
    netscaler: NetscalerGroupAttribute | None = None

    def attributes(self, groups: Sequence[str]) -> list[bytes]:
        """Encoded TLVs for an Access-Accept to a member of `groups`, in config order.

        A rule for group `*` applies to everyone; when its value names `{group}` it is
        emitted once per group. Values that cannot be encoded are skipped (logged by
        the caller), never a reason to refuse the accept.
        """
        out: list[bytes] = []
        netscaler_groups: list[str] = []
        for rule in self.rules:
            if rule.group == ALL_GROUPS:
                targets = list(groups) if "{group}" in rule.value else [""]
            elif rule.group in groups:
                targets = [rule.group]
            else:
                continue
            for g in targets:
                if rule.attr is None:
                    netscaler_groups.append(rule.value.replace("{group}", g))
                    continue
                tlv = rule.encoded(g)
                if tlv is not None:
                    out.append(tlv)
        if netscaler_groups and self.netscaler is not None:
            out.extend(netscaler_attributes(self.netscaler, netscaler_groups))
        return out


def netscaler_attributes(ns: NetscalerGroupAttribute, groups: Sequence[str]) -> list[bytes]:
    """`prefix` + groups joined by `separator`, split over several VSAs when long.

    NetScaler's RADIUS action extracts groups from (vendor id, attribute type) after
    stripping the prefix and splitting on the separator; each VSA repeats the prefix so
    every one of them parses on its own.
    """
    prefix = ns.prefix.encode("utf-8")
    sep = ns.separator.encode("utf-8")
    out: list[bytes] = []
    current = b""
    for g in dict.fromkeys(groups):  # de-duplicated, order kept
        name = g.encode("utf-8")
        if len(prefix) + len(name) > _VSA_VALUE_MAX:
            continue  # cannot be sent whole; a truncated group name would be wrong
        candidate = current + sep + name if current else name
        if len(prefix) + len(candidate) > _VSA_VALUE_MAX:
            out.append(vendor_attribute(ns.vendor_id, ns.attribute, prefix + current))
            candidate = name
        current = candidate
    if current:
        out.append(vendor_attribute(ns.vendor_id, ns.attribute, prefix + current))
    return out


def build_reply_plan(
    rules: Sequence[ReplyAttribute],
    netscaler: NetscalerGroupAttribute,
    dictionary: RadiusDictionary,
) -> ReplyPlan:
    """Resolve attribute names; ValueError naming the first unknown or unusable one."""
    resolved: list[_Rule] = []
    uses_netscaler = False
    for r in rules:
        if not r.group:
            raise ValueError("reply attribute without a group (use `*` for everyone)")
        if r.attribute == NETSCALER:
            uses_netscaler = True
            resolved.append(_Rule(group=r.group, attr=None, value=r.value))
            continue
        attr = dictionary.get(r.attribute)
        if attr is None:
            raise ValueError(f"reply attribute {r.attribute!r} is not in the dictionary")
        if attr.vendor_id == 0 and attr.code in (2, 18, 24, 26, 33, 80):
            raise ValueError(f"reply attribute {r.attribute!r} is managed by authd itself")
        # Check the configured value encodes (with a sample group for templates).
        attr.encode(r.value.replace("{group}", "g"))
        resolved.append(_Rule(group=r.group, attr=attr, value=r.value))
    return ReplyPlan(rules=tuple(resolved), netscaler=netscaler if uses_netscaler else None)
