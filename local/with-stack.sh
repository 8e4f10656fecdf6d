#!/usr/bin/env bash
# Run a command with the local AWS stack (moto) up on a free 127.0.0.1 port, then stop it.
# The command sees the standard SDK variables: AWS_ENDPOINT_URL, AWS_REGION, credentials.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv="$root/.venv"
"$here/setup-venv.sh"

state=$(mktemp -d)
"$venv/bin/python" "$here/moto_server.py" --port-file "$state/port" >"$state/moto.log" 2>&1 &
moto_pid=$!
cleanup() {
  kill "$moto_pid" 2>/dev/null || true
  wait "$moto_pid" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT INT TERM

for _ in $(seq 1 200); do
  [ -s "$state/port" ] && break
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "moto failed to start:" >&2; cat "$state/moto.log" >&2; exit 1
  fi
  sleep 0.1
done
[ -s "$state/port" ] || { echo "moto did not start in 20 s" >&2; cat "$state/moto.log" >&2; exit 1; }

port=$(cat "$state/port")
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_EC2_METADATA_DISABLED=true
echo "local AWS stack: $AWS_ENDPOINT_URL" >&2
"$@"
