"""Configuration errors: every problem of a file, reported at once (STYLE pattern 7).

An operator fixing a config wants the whole list in one run of `authd check-config`,
each line in the `FILE:LINE: key.path: what is wrong` form editors and CI can jump to.
Messages never carry a secret value: they name the key or the file, not its content.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file; `line` is 1-based, 0 when no line applies."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class ConfigErrors(Exception):
    """Every problem found in one pass over a config file, sorted by line and key path."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = sorted(problems, key=lambda p: (p.line, p.path))
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class ConfigValueError(ValueError):
    """One bad value, raised by the value parsers (durations, addresses).

    It knows neither file nor line: the loader turns it into a `ConfigProblem` for the
    key it was parsing. Its message never repeats a secret.
    """
