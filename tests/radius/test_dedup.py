"""RFC 5080 duplicate cache: states, expiry by `now`, bounded size."""

from __future__ import annotations

from authd.radius.dedup import DuplicateCache, Seen

KEY = ("192.0.2.1", 40000, 7, b"a" * 16)


def test_new_then_in_progress_then_answered() -> None:
    """First sight is NEW, a repeat before the answer is IN_PROGRESS, then the reply."""
    c = DuplicateCache(window=30)
    assert c.check(KEY, 0.0) == (Seen.NEW, None)
    assert c.check(KEY, 1.0) == (Seen.IN_PROGRESS, None)
    c.answered(KEY, b"reply", 2.0)
    assert c.check(KEY, 3.0) == (Seen.ANSWERED, b"reply")


def test_answer_expires_after_window() -> None:
    """At answered + window the entry is gone and the same key is NEW again."""
    c = DuplicateCache(window=30)
    c.check(KEY, 0.0)
    c.answered(KEY, b"reply", 10.0)
    assert c.check(KEY, 39.9)[0] is Seen.ANSWERED
    assert c.check(KEY, 40.0)[0] is Seen.NEW
    assert len(c) == 1  # the new, in-progress entry only


def test_any_key_part_makes_a_different_request() -> None:
    """Source port, identifier or authenticator differing is not a duplicate."""
    c = DuplicateCache(window=30)
    c.check(KEY, 0.0)
    c.answered(KEY, b"r", 0.0)
    for other in [
        ("192.0.2.2", 40000, 7, b"a" * 16),
        ("192.0.2.1", 40001, 7, b"a" * 16),
        ("192.0.2.1", 40000, 8, b"a" * 16),
        ("192.0.2.1", 40000, 7, b"b" * 16),
    ]:
        assert c.check(other, 1.0)[0] is Seen.NEW


def test_forget_lets_a_retransmit_be_evaluated() -> None:
    """An unanswered request forgotten (dropped) is NEW when retransmitted."""
    c = DuplicateCache(window=30)
    c.check(KEY, 0.0)
    c.forget(KEY)
    assert c.check(KEY, 1.0)[0] is Seen.NEW


def test_forget_never_drops_an_answer() -> None:
    """forget only removes in-progress entries, never a cached reply."""
    c = DuplicateCache(window=30)
    c.check(KEY, 0.0)
    c.answered(KEY, b"r", 0.0)
    c.forget(KEY)
    assert c.check(KEY, 1.0) == (Seen.ANSWERED, b"r")


def test_size_is_bounded_by_evicting_oldest_answers() -> None:
    """Past max_entries the oldest answers go first; memory stays bounded."""
    c = DuplicateCache(window=30, max_entries=3)
    keys = [("192.0.2.1", p, 1, b"x" * 16) for p in range(5)]
    for k in keys:
        c.check(k, 0.0)
        c.answered(k, b"r", 0.0)
    assert len(c) == 3
    assert c.check(keys[0], 1.0)[0] is Seen.NEW
    assert c.check(keys[4], 1.0)[0] is Seen.ANSWERED


def test_zero_window_caches_nothing() -> None:
    """duplicate_window 0 disables the cache (each retransmit is evaluated)."""
    c = DuplicateCache(window=0)
    c.check(KEY, 0.0)
    c.answered(KEY, b"r", 0.0)
    assert c.check(KEY, 0.0)[0] is Seen.NEW


def test_reply_octets_are_bounded_too_and_counted_exactly() -> None:
    """Past max_bytes of replies the oldest answers go first, whatever the entry count
    (4,096-octet replies, as a Proxy-State echo makes them); the count of octets held
    follows replacements and expiry back to zero."""
    c = DuplicateCache(window=30, max_entries=1000, max_bytes=10 * 4096)
    keys = [("192.0.2.1", p, 1, b"x" * 16) for p in range(25)]
    for i, k in enumerate(keys):
        c.check(k, float(i))
        c.answered(k, bytes([i]) * 4096, float(i))
        assert c.reply_bytes <= 10 * 4096
    assert len(c) == 10 and c.reply_bytes == 10 * 4096
    assert c.check(keys[14], 30.0)[0] is Seen.NEW
    assert c.check(keys[15], 30.0) == (Seen.ANSWERED, bytes([15]) * 4096)
    c.answered(keys[24], b"", 31.0)  # replaced (an answer that could not be sent)
    assert c.reply_bytes == 9 * 4096
    c.check(("192.0.2.9", 1, 1, b"y" * 16), 100.0)  # sweeps every expired answer
    assert c.reply_bytes == 0 and len(c) == 2  # keys[14] and the new one: in progress
