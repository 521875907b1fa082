# Sourced by scripts/run and scripts/test: create .venv at the repo root and install authd
# into it (editable), with extras given as arguments. Re-running is cheap: pip is only
# called again when the packaging files or a compiled module's source changed since the
# last install (setup.py compiles the hot path with mypyc, about a minute).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"

# The build inputs newer than the stamp: the packaging files, and the modules setup.py
# compiles in place (their extension modules would otherwise shadow the edited source).
changed_since() {
    local stamp="$1"
    local sources=("$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$ROOT/setup.py")
    sources+=($(grep -o '"authd/[^"]*\.py"' "$ROOT/setup.py" | tr -d '"' | sed "s|^|$ROOT/|"))
    find "${sources[@]}" -newer "$stamp" -print -quit
}

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
    if [ ! -f "$stamp" ] || [ -n "$(changed_since "$stamp")" ]; then
        echo ">> installing authd${extras:+[$extras]} into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
        "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
        touch "$stamp"
        "$VENV/bin/python" - "$ROOT/setup.py" <<'PY'
import importlib.util, sys
import authd
spec = importlib.util.spec_from_file_location("authd_setup", sys.argv[1])
setup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup)
why = setup._why_not_compiled()
print(">> hot path:", authd.hot_path_build() + (f" ({why})" if why else ""))
PY
    fi
}
