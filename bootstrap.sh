#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine (idempotent; a second run takes seconds):
#   - the system library for headless rendering on the CPU (OSMesa),
#   - a virtual environment in .venv (override with RAYMOTION_VENV) holding raymotion and its pinned stack.
# Used by the README's two commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${RAYMOTION_VENV:-.venv}
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap.sh: raymotion needs Python >= 3.11; '$PYTHON' is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    exit 1
fi

# pyrender renders through OSMesa where there is no GPU (PYOPENGL_PLATFORM=osmesa).
if ! ldconfig -p | grep -q 'libOSMesa\.so'; then
    if command -v apt-get >/dev/null; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        echo "bootstrap.sh: installing libosmesa6 (headless OpenGL) with apt-get"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libosmesa6 >/dev/null
    else
        echo "bootstrap.sh: libOSMesa not found and no apt-get: install your distribution's OSMesa package (rendering needs it)." >&2
    fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.raymotion-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap.sh: installing raymotion into $VENV (a few minutes the first time)"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e '.[dev]'
    # pyrender 0.1.45 pins PyOpenGL 3.1.0, which cannot create OSMesa contexts; 3.1.10 can (pip warns, it works).
    "$VENV/bin/pip" install -q PyOpenGL==3.1.10 2>&1 | grep -v "pyrender 0.1.45 requires PyOpenGL==3.1.0" || true
    echo "$want" > "$stamp"
fi
