#!/usr/bin/env bash
# `sam local invoke` and `sam local start-api` on this machine's Docker engine, against the
# local AWS stack (moto). Everything it starts (moto, SAM, the Lambda containers) it stops.
#
#   local/sam-local.sh invoke EVENT     events/EVENT.json through its function's container
#   local/sam-local.sh start-api        the API on http://127.0.0.1:${PORT:-3000}/api/v1/auth,
#                                       SAM's HTTP API emulation, warm containers (Ctrl-C stops)
#   local/sam-local.sh run COMMAND...   COMMAND with the stack up and SAM_LOCAL_* exported
#                                       (shared/tests/sam_local.rs runs this way)
#   local/sam-local.sh build            `sam build` for this machine's architecture
#
# Needs: the `sam build` output in .aws-sam/build (`build` above, `make infra`; `make test`
# builds it), built for this machine's architecture (here x86_64: `Architecture=x86_64`),
# and the base image, built once by local/base-image.sh (called here; cached).
#
# How the containers reach moto: SAM puts its Lambda containers on Docker's default bridge
# network, where the host's 127.0.0.1 is the container's own; this SAM CLI accepts
# `--docker-network host` but does not honour it (the container stays on the bridge and
# gets "Connection refused" from 127.0.0.1). So moto listens on the bridge's host address
# (docker0, e.g. 172.17.0.1) for these runs only (moto_server.py --host), and that address
# is what AWS_ENDPOINT_URL names, for the containers and for the host alike. SAM passes a
# container only the variables the template declares, so the functions run from a copy of
# the built template that also declares AWS_ENDPOINT_URL (local/sam_local.py template).
#
# Exported to COMMAND (run) and used by invoke/start-api:
#   AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#   SAM_LOCAL_TEMPLATE  that template copy       SAM_LOCAL_ARCH  x86_64 or arm64 (of the build)
#   SAM_LOCAL_STATE     a scratch folder, removed at exit; PATH starts with .venv-sam/bin
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
mode=${1:-}
[ -n "$mode" ] || usage
shift
case "$mode" in
  invoke) [ $# -eq 1 ] || usage ;;
  start-api) [ $# -eq 0 ] || usage ;;
  run) [ $# -ge 1 ] || usage ;;
  build) [ $# -eq 0 ] || usage ;;
  *) usage ;;
esac
case "$(uname -m)" in
  x86_64) host_arch=x86_64 ;;
  aarch64 | arm64) host_arch=arm64 ;;
  *) host_arch=$(uname -m) ;;
esac

"$here/setup-venv.sh"
"$here/setup-venv.sh" "$root/.venv-sam" "$here/requirements-sam.txt"
if [ "$mode" = build ]; then
  export SAM_CLI_TELEMETRY=0 SAM_CLI_BETA_RUST_CARGO_LAMBDA=1 PATH="$root/.venv-sam/bin:$PATH"
  echo "+ sam build --parameter-overrides Architecture=$host_arch" >&2
  exec sam build --parameter-overrides "Architecture=$host_arch"
fi
"$here/base-image.sh"

built="$root/.aws-sam/build"
if [ ! -f "$built/template.yaml" ]; then
  echo "sam-local: no sam build output in .aws-sam/build: run make infra first" >&2
  exit 1
fi
# The architecture the functions were built for, from a bootstrap's ELF header (e_machine).
machine=$(od -An -tu2 -j18 -N2 "$built/OtpSendFunction/bootstrap" | tr -d ' ')
case "$machine" in
  62) arch=x86_64 ;;
  183) arch=arm64 ;;
  *) echo "sam-local: cannot tell the architecture of .aws-sam/build (e_machine $machine)" >&2; exit 1 ;;
esac
if [ "$arch" != "$host_arch" ]; then
  echo "sam-local: .aws-sam/build is $arch but this machine is $host_arch (no emulator):" >&2
  echo "  local/sam-local.sh build   (sam build --parameter-overrides Architecture=$host_arch)" >&2
  exit 1
fi

bridge=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
if [ -z "$bridge" ]; then
  echo "sam-local: no IPv4 address on docker0 (Docker's default bridge); is the engine running?" >&2
  exit 1
fi

state=$(mktemp -d "${TMPDIR:-/tmp}/foodsave-sam-local.XXXXXX")
moto_pid=
sam_pid=
sms_pid=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$sam_pid" ] && kill -0 "$sam_pid" 2>/dev/null; then
    # SIGTERM: SAM stops and removes its warm containers before it exits.
    kill -TERM "$sam_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$sam_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$sam_pid" 2>/dev/null || true
    wait "$sam_pid" 2>/dev/null || true
  fi
  if [ -n "$sms_pid" ]; then
    kill "$sms_pid" 2>/dev/null || true
    wait "$sms_pid" 2>/dev/null || true
  fi
  # Any Lambda container of this run that SAM left behind: with --warm-containers EAGER,
  # SAM 1.170.0 starts the containers from threads that race to create its container
  # registry, and forgets (never reuses nor stops) those of the losing threads.
  if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
    for id in $(docker ps -aq --filter label=sam.cli.container.type=lambda 2>/dev/null); do
      if docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$id" 2>/dev/null \
        | grep -qxF "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"; then
        docker rm -f "$id" >/dev/null 2>&1 || true
        echo "sam-local: removed Lambda container ${id:0:12}, left by SAM" >&2
      fi
    done
  fi
  if [ -n "$moto_pid" ]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -rf "$state" || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

. "$here/moto.sh"
start_moto "$root/.venv/bin/python" "$bridge" "$state"
export AWS_ENDPOINT_URL="http://$bridge:$moto_port"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="$AWS_REGION"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_EC2_METADATA_DISABLED=true
# SAM itself asks STS for the account id: moto answers at once (AWS is not reachable).
export SAM_CLI_TELEMETRY=0
export PATH="$root/.venv-sam/bin:$PATH"
export SAM_LOCAL_STATE="$state"
export SAM_LOCAL_TEMPLATE="$state/template.yaml"
export SAM_LOCAL_ARCH="$arch"
echo "local AWS stack: $AWS_ENDPOINT_URL (moto on the Docker bridge's host address)" >&2
sam_py="$root/.venv-sam/bin/python"
"$sam_py" "$here/sam_local.py" template "$built/template.yaml" "$SAM_LOCAL_TEMPLATE"

if [ "$mode" = run ]; then
  set +e
  "$@"
  exit $?
fi

# invoke and start-api: the table, and the keys the way a deploy gets them (Secrets
# Manager runs the rotation function's four steps): KeyRotationFunction in its container.
table=foodsave-auth-local
auth_secret=foodsave-auth-local
jwks_secret=foodsave-auth-local-jwks
port=${PORT:-3000}
if [ "$port" = 0 ]; then
  port=$("$sam_py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
issuer="http://127.0.0.1:$port/api/v1/auth"
"$sam_py" "$here/sam_local.py" create-table "$table"
"$sam_py" "$here/sam_local.py" create-secrets "$auth_secret" "$jwks_secret"
"$sam_py" "$here/sam_local.py" create-event-bus "$table"
"$sam_py" "$here/sam_local.py" env-vars "$state/env.json" \
  "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL" "TABLE_NAME=$table" "AUTH_SECRET_ID=$auth_secret" \
  "JWKS_SECRET_ID=$jwks_secret" "JWT_ISSUER=$issuer" "EVENT_BUS_NAME=$table"
sam_args=(-t "$SAM_LOCAL_TEMPLATE" --env-vars "$state/env.json" --skip-pull-image
  --parameter-overrides "Architecture=$arch")

token=$("$sam_py" -c 'import uuid; print(uuid.uuid4())')
echo "signing keys: KeyRotationFunction, steps createSecret setSecret testSecret finishSecret" >&2
for step in createSecret setSecret testSecret finishSecret; do
  printf '{"SecretId":"%s","ClientRequestToken":"%s","Step":"%s"}\n' "$auth_secret" "$token" "$step" \
    >"$state/rotation-$step.json"
  if ! sam local invoke KeyRotationFunction -e "$state/rotation-$step.json" "${sam_args[@]}" \
    >"$state/rotation.out" 2>"$state/rotation.err" \
    || ! grep -q '"ok": *true' "$state/rotation.out"; then
    cat "$state/rotation.err" "$state/rotation.out" >&2
    echo "sam-local: rotation step $step failed" >&2
    exit 1
  fi
done

if [ "$mode" = invoke ]; then
  event=$1
  function=
  for f in otp-send otp-verify token-refresh logout sessions account-delete jwks key-rotation event-relay; do
    case "$event" in "$f" | "$f"-*) [ ${#f} -gt ${#function} ] && function=$f ;; esac
  done
  if [ ! -f "events/$event.json" ] || [ -z "$function" ]; then
    echo "sam-local: no events/$event.json for a function" >&2
    exit 2
  fi
  logical=$(echo "$function" | sed -E 's/(^|-)([a-z])/\U\2/g')Function
  echo "+ sam local invoke $logical -e events/$event.json ${sam_args[*]}" >&2
  sam local invoke "$logical" -e "events/$event.json" "${sam_args[@]}"
  echo
  "$sam_py" "$here/sam_local.py" sms
  exit 0
fi

"$sam_py" "$here/sam_local.py" sms --follow &
sms_pid=$!
echo "+ sam local start-api --host 127.0.0.1 --port $port --warm-containers EAGER ${sam_args[*]}" >&2
sam local start-api --host 127.0.0.1 --port "$port" --warm-containers EAGER "${sam_args[@]}" &
sam_pid=$!
echo "FoodSave Auth API (sam local start-api): $issuer" >&2
set +e
wait "$sam_pid"
status=$?
sam_pid=
exit "$status"
