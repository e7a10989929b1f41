#!/usr/bin/env bash
# Install the headless browser the explorer tests drive, for `make test`: Debian's chromium (apt-get, as root or
# through sudo without a password prompt) and the playwright package into VENV (the dev extra already holds it).
# Playwright's own browser download (`playwright install`) is not used: the tests launch /usr/bin/chromium. If a
# step fails this prints a loud warning and exits 0: the browser tests then skip with a loud message.
#
#   scripts/install_browser.sh VENV        (e.g. scripts/install_browser.sh .venv)
set -u

VENV="${1:-}"
if [ -z "$VENV" ] || [ ! -x "$VENV/bin/python" ]; then
    echo "install_browser.sh: expected the virtual environment as the first argument (e.g. .venv), got '${VENV}'." >&2
    exit 2
fi
warn() {
    echo "#### WARNING: $1: the explorer's browser test will be SKIPPED (apt-get install -y chromium; pip install playwright)" >&2
    exit 0
}
"$VENV/bin/python" -c "import playwright" 2>/dev/null || "$VENV/bin/python" -m pip install --quiet playwright \
    || warn "pip install playwright failed"
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        warn "chromium is missing and apt-get needs root"; fi
    $SUDO apt-get install -y chromium >/dev/null 2>&1 \
        || { $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y chromium >/dev/null 2>&1; } \
        || warn "apt-get install -y chromium failed"
fi
