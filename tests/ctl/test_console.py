"""Where authctl reads secrets from: no-echo prompts on a terminal, lines otherwise."""

from __future__ import annotations

import io

import pytest

from authd.core.errors import InvalidInput
from authd.ctl.commands import Console


class FakeTty(io.StringIO):
    """A stdin that claims to be a terminal; prompts must not read from it."""

    def isatty(self) -> bool:
        return True


class Prompts:
    """Answers no-echo prompts from a script and records what was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.asked.append(prompt)
        return self.answers.pop(0)


def test_terminal_prompts_twice_when_confirming() -> None:
    """On a terminal a new secret is asked twice, without echo, and must match."""
    prompts = Prompts("s3cret", "s3cret")
    assert Console(FakeTty(), prompts).secret("PIN: ", confirm=True) == "s3cret"
    assert prompts.asked == ["PIN: ", "again: "]
    with pytest.raises(InvalidInput) as info:
        Console(FakeTty(), Prompts("s3cret", "other")).secret("PIN: ", confirm=True)
    assert "s3cret" not in str(info.value) and "other" not in str(info.value)


def test_pipe_reads_one_line_each_without_prompting() -> None:
    """Not a terminal: each secret is the next line, CRLF tolerated, nothing echoed."""
    console = Console(io.StringIO("pw with spaces \r\n\n"), Prompts())
    assert console.secret("Password: ") == "pw with spaces "
    assert console.secret("OTP: ", optional=True) == ""
    assert console.secret("OTP: ", optional=True) == ""  # end of input: optional is empty


def test_missing_or_empty_required_secret_fails() -> None:
    """An empty line or end of input never becomes an empty password."""
    with pytest.raises(InvalidInput):
        Console(io.StringIO(""), Prompts()).secret("Password: ")
    with pytest.raises(InvalidInput):
        Console(io.StringIO("\n"), Prompts()).secret("Password: ")
    with pytest.raises(InvalidInput):
        Console(FakeTty(), Prompts("")).secret("Password: ")
