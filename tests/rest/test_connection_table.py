"""ConnectionTable: the per-source and total caps on open HTTP connections, and which
connection makes room for a new one."""

from __future__ import annotations

import ipaddress

from authd.rest.connections import ConnectionLimits, ConnectionTable


def never_busy(conn: object) -> bool:
    return False


def test_per_source_cap_refuses_and_frees_on_close() -> None:
    """The source's third connection is refused; once one closes, a new one is let in;
    other sources are not affected."""
    table = ConnectionTable(ConnectionLimits(total=10, per_source=2))
    assert table.admit("a1", "192.0.2.1", never_busy) == []
    assert table.admit("a2", "192.0.2.1", never_busy) == []
    assert table.admit("a3", "192.0.2.1", never_busy) is None
    assert table.admit("b1", "192.0.2.2", never_busy) == []
    table.forget("a1")
    table.forget("a1")  # twice (evicted, then its connectionLost): no harm
    assert table.admit("a3", "192.0.2.1", never_busy) == []
    assert len(table) == 3


def test_total_cap_pushes_out_the_oldest_connection_not_being_answered() -> None:
    """At the cap a new connection closes the oldest idle or still-sending one, never
    one whose request is being answered; when all are, the newcomer is refused."""
    busy = {"c1"}
    table = ConnectionTable(ConnectionLimits(total=3, per_source=10))
    for conn in ("c1", "c2", "c3"):
        assert table.admit(conn, f"198.51.100.{conn[1]}", busy.__contains__) == []
    assert table.admit("c4", "198.51.100.4", busy.__contains__) == ["c2"]
    busy.update({"c3", "c4"})
    assert table.admit("c5", "198.51.100.5", busy.__contains__) is None
    assert len(table) == 3


def test_trusted_proxies_are_not_capped_per_source_and_reload_lowers_the_total() -> None:
    """Clients behind a trusted proxy share its address: no per-source cap there. A
    reload that lowers the total makes the next newcomer push out enough old ones."""
    proxy = ipaddress.ip_network("10.0.0.0/8")
    table = ConnectionTable(ConnectionLimits(total=100, per_source=1, exempt=(proxy,)))
    for i in range(5):
        assert table.admit(f"p{i}", "10.1.2.3", never_busy) == []
    table.limits = ConnectionLimits(total=3, per_source=1, exempt=(proxy,))
    assert table.admit("n", "203.0.113.7", never_busy) == ["p0", "p1", "p2"]
    assert len(table) == 3
