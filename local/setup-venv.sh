#!/usr/bin/env bash
# Create a project-local Python venv with pinned packages, once per requirements change.
# Usage: setup-venv.sh [VENV_DIR REQUIREMENTS_FILE]   (default: .venv local/requirements.txt)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv="${1:-$root/.venv}"
requirements="${2:-$here/requirements.txt}"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "setting up $venv (pinned: ${requirements#"$root"/})" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" >"$stamp"
