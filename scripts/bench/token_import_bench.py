"""Time `authctl token import` of N tokens into a fresh SQLite store.

Builds the file (CSV, or plain PSKC), then runs authctl in a child process exactly as
an operator would, and prints the wall time of that run and the rows in the store.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = "store:\n  url: sqlite:///{db}\nkeys:\n  file: {keys}\n"
PSKC_HEAD = (
    '<?xml version="1.0"?><KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">'
)


def write_csv(path: Path, n: int) -> None:
    with path.open("w") as f:
        f.write("serial,secret,type,digits,period/counter\n")
        for i in range(n):
            f.write(f"HW{i:08d},{secrets.token_hex(20)},totp,6,30\n")


def write_pskc(path: Path, n: int) -> None:
    with path.open("w") as f:
        f.write(PSKC_HEAD)
        for i in range(n):
            seed = base64.b64encode(secrets.token_bytes(20)).decode()
            f.write(
                f"<KeyPackage><DeviceInfo><SerialNo>HW{i:08d}</SerialNo></DeviceInfo>"
                '<Key Id="k" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">'
                f"<Data><Secret><PlainValue>{seed}</PlainValue></Secret></Data></Key></KeyPackage>"
            )
        f.write("</KeyContainer>")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--format", choices=("csv", "pskc"), default="csv")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "authd.yaml"
        config.write_text(CONFIG.format(db=folder / "authd.db", keys=folder / "keys.json"))
        source = folder / f"tokens.{args.format}"
        (write_csv if args.format == "csv" else write_pskc)(source, args.tokens)
        cmd = [sys.executable, "-m", "authd.authctl", "-c", str(config), "token", "import",
               str(source), "--format", args.format]  # fmt: skip
        env = dict(os.environ)
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        rows = (
            sqlite3.connect(folder / "authd.db")
            .execute("SELECT count(*) FROM tokens")
            .fetchone()[0]
        )
        size = source.stat().st_size / 1e6
        print(f"{args.tokens} tokens ({args.format}, {size:.1f} MB): {elapsed:.1f} s "
              f"({args.tokens / elapsed:,.0f} tokens/s), {rows} rows in the store")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
