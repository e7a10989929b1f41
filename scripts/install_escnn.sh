#!/usr/bin/env bash
# Install the optional escnn extra into a virtual environment, for `make test`.
#
#   scripts/install_escnn.sh VENV        (e.g. scripts/install_escnn.sh .venv)
#
# escnn's py3nj dependency compiles Fortran, so a Fortran compiler comes first: if `gfortran` is missing and apt-get
# is usable (as root, or through sudo without a password prompt), `apt-get install -y gfortran` installs it. Then
# `pip install escnn` into VENV. escnn is optional: if a step fails, this prints a loud warning and exits 0, so that
# the escnn tests are skipped (pytest.importorskip) instead of failing CI. Installing escnn pulls numpy down to
# 1.26.4 (escnn 1.0.11's pin, DESIGN §8); the rest of eqmonitor runs with it.
set -u

VENV="${1:-}"
if [ -z "$VENV" ] || [ ! -x "$VENV/bin/python" ]; then
    echo "install_escnn.sh: expected the virtual environment as the first argument (e.g. .venv), got '${VENV}'." >&2
    exit 2
fi
PY="$VENV/bin/python"

warn() {
    {
        echo
        echo "################################################################################"
        echo "# WARNING: escnn NOT installed: $1"
        echo "# The escnn integration tests will be SKIPPED. To run them, install a Fortran"
        echo "# compiler (Debian/Ubuntu: apt-get install -y gfortran) and then:"
        echo "#     $PY -m pip install escnn"
        echo "################################################################################"
        echo
    } >&2
}

if "$PY" -c "import escnn" >/dev/null 2>&1; then
    echo "install_escnn.sh: escnn is already installed in $VENV."
    exit 0
fi

if ! command -v gfortran >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "gfortran is missing and apt-get is not available to install it."
        exit 0
    fi
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        warn "gfortran is missing; installing it needs root (or passwordless sudo)."
        exit 0
    fi
    echo "install_escnn.sh: installing gfortran with apt-get (escnn's py3nj dependency compiles Fortran)..."
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gfortran; }; then
        warn "apt-get install gfortran failed."
        exit 0
    fi
fi

echo "install_escnn.sh: pip install escnn into $VENV..."
if ! "$PY" -m pip install --quiet escnn; then
    warn "pip install escnn failed (see the pip output above)."
    exit 0
fi
if ! "$PY" -c "import escnn.nn" >/dev/null 2>&1; then
    warn "escnn installed but does not import: $("$PY" -c 'import escnn.nn' 2>&1 | tail -1)"
    exit 0
fi
echo "install_escnn.sh: escnn $("$PY" -c 'import escnn, importlib.metadata as m; print(m.version("escnn"))') installed."
