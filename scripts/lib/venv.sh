# Sourced by scripts/run and scripts/test: create .venv at the repo root and install authd
# into it (editable), with extras given as arguments. Re-running is cheap: pip is only
# called again when setup.cfg changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"

ensure_venv() {
    local extras="${1:-}"
    if [ ! -x "$VENV/bin/python" ]; then
        echo ">> creating $VENV"
        python3 -m venv "$VENV" || {
            echo "python3 -m venv failed: install Debian's python3-venv (apt-get install python3-venv)" >&2
            exit 1
        }
    fi
    local stamp="$VENV/.authd-installed${extras:+-$extras}"
    if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo ">> installing authd${extras:+[$extras]} into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
        "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
        touch "$stamp"
    fi
}
