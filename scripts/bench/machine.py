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


def cpu_jiffies(stat: str | None = None) -> dict[str, tuple[int, int]]:
    """Per line of /proc/stat ('cpu' for the machine, 'cpu0', 'cpu1', ...): (idle, total)
    jiffies since boot; idle counts iowait too. `stat`: that file's text (default: read)."""
    if stat is None:
        with open("/proc/stat") as f:
            stat = f.read()
    out = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu"):
            # user nice system idle iowait irq softirq steal (guest time is within user)
            ticks = [int(x) for x in fields[:8]]
            out[name] = (ticks[3] + ticks[4], sum(ticks))
    return out


def idle_shares(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, float]:
    """The share of each CPU (and of the machine, 'cpu') that was idle between two
    cpu_jiffies() readings."""
    out = {}
    for name, (idle, total) in after.items():
        idle0, total0 = before[name]
        out[name] = (idle - idle0) / max(1, total - total0)
    return out
