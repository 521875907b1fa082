"""How loaded the machine is while a benchmark runs: figures from a shared host are
only meaningful beside its load."""

from __future__ import annotations

import subprocess


def uptime() -> str:
    """`uptime`'s line (load averages over 1, 5 and 15 minutes)."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()


def table(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, as docs/PERFORMANCE.md quotes them."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
