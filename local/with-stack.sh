#!/usr/bin/env bash
# Run a command with the local AWS stack (moto) up on a free 127.0.0.1 port, then stop it.
# The command sees the standard SDK variables: AWS_ENDPOINT_URL, AWS_REGION, credentials.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv="$root/.venv"
"$here/setup-venv.sh"

state=$(mktemp -d)
moto_pid=
cleanup() {
  if [ -n "$moto_pid" ]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -rf "$state"
}
trap cleanup EXIT INT TERM

. "$here/moto.sh"
start_moto "$venv/bin/python" 127.0.0.1 "$state"
port=$moto_port
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_EC2_METADATA_DISABLED=true
echo "local AWS stack: $AWS_ENDPOINT_URL" >&2
"$@"
