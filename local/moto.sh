# Sourced by with-stack.sh and sam-local.sh: start the local AWS stack in the background.
#   start_moto PYTHON HOST STATE_DIR
# serves moto_server.py on HOST at a free port, waits (20 s at most) until it listens, and
# sets moto_pid and moto_port; the caller stops it. Its log is STATE_DIR/moto.log.
start_moto() {
  local python=$1 host=$2 state=$3
  "$python" "$(dirname "${BASH_SOURCE[0]}")/moto_server.py" --host "$host" \
    --port-file "$state/port" >"$state/moto.log" 2>&1 &
  moto_pid=$!
  for _ in $(seq 1 200); do
    [ -s "$state/port" ] && break
    if ! kill -0 "$moto_pid" 2>/dev/null; then
      echo "moto failed to start:" >&2; cat "$state/moto.log" >&2; return 1
    fi
    sleep 0.1
  done
  [ -s "$state/port" ] || { echo "moto did not start in 20 s" >&2; cat "$state/moto.log" >&2; return 1; }
  moto_port=$(cat "$state/port")
}
