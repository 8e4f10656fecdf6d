#!/usr/bin/env bash
# Create the project-local Python venv with the pinned local-stack packages (idempotent).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$(dirname "$here")/.venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "setting up $venv (pinned: local/requirements.txt)" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
echo "$want" >"$stamp"
