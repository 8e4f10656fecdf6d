#!/usr/bin/env bash
# Keep openapi.yaml true: validate the document, then let schemathesis (pinned, in
# .venv-schemathesis) generate requests from it against local-api and check every answer
# against it (status codes, content types, headers, bodies; malformed requests must be
# refused), the examples, and the links send → verify → refresh → logout and verify →
# sessions → revoke / account deletion statefully (local/schemathesis_hooks.py lets logins
# succeed and gives well-formed requests real access tokens).
# Run under the local AWS stack, after `cargo build --workspace --all-targets --locked`:
#   local/with-stack.sh local/schemathesis.sh
# Starts local-api on a free 127.0.0.1 port and stops it. Exits non-zero on any failure.
# Budgets are in local/schemathesis.toml; SCHEMATHESIS_SEED (default 1) picks another run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv="$root/.venv-schemathesis"
: "${AWS_ENDPOINT_URL:?run under local/with-stack.sh (the local AWS stack)}"
local_api="${LOCAL_API:-$root/target/debug/local-api}"
if [ ! -x "$local_api" ]; then
  echo "$local_api is missing: cargo build --workspace --all-targets --locked" >&2
  exit 2
fi
"$here/setup-venv.sh" "$venv" "$here/requirements-schemathesis.txt"
out="$root/target/schemathesis"
rm -rf "$out"
mkdir -p "$out"

echo "== openapi-spec-validator openapi.yaml"
"$venv/bin/openapi-spec-validator" "$root/openapi.yaml"

port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port/api/v1/auth"
# Where the hooks sign a test number in for a real access token.
export FOODSAVE_API="$base"
# Test numbers so that logins can succeed, and budgets out of the way of a few thousand
# requests from one IP to a handful of phones (each budget has its own tests).
export OTP_TEST_NUMBERS="+77000000001=123456,+77000000002=654321"
export OTP_SEND_LIMIT=1000000 OTP_MAX_WRONG_PER_DAY=0 OTP_IP_SEND_LIMIT=0 OTP_GLOBAL_SEND_LIMIT_PER_HOUR=0
api_pid=
cleanup() {
  if [ -n "$api_pid" ]; then
    kill "$api_pid" 2>/dev/null || true
    wait "$api_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM
PORT=$port "$local_api" >"$out/local-api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 300); do
  if curl -fsS -o "$out/served-openapi.yaml" "$base/openapi.yaml" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$api_pid" 2>/dev/null; then
    cat "$out/local-api.log" >&2
    echo "local-api exited before serving" >&2
    exit 1
  fi
  sleep 0.2
done
echo "== local-api on $base serves the committed openapi.yaml"
if ! cmp "$out/served-openapi.yaml" "$root/openapi.yaml"; then
  echo "local-api does not serve this openapi.yaml: rebuild it (cargo build --workspace --all-targets --locked)" >&2
  exit 1
fi

echo "== schemathesis $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))')"
status=0
# From target/schemathesis, where it keeps its cache of crashes.
cd "$out"
PYTHONPATH="$here" SCHEMATHESIS_HOOKS=schemathesis_hooks "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$base/openapi.yaml" \
  --url "$base" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection \
  --phases examples,coverage,fuzzing,stateful \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --workers 1 \
  --no-color \
  --report junit,ndjson --report-junit-path "$out/junit.xml" --report-ndjson-path "$out/events.ndjson" \
  || status=$?
"$venv/bin/python" - "$out/events.ndjson" "$status" "$base" <<'PY'
import collections, json, sys
requests = failures = errors = 0
# Requests per documented operation and status (others: methods the document does not list).
per_route = collections.defaultdict(collections.Counter)
documented = {
    ("POST", "/otp/send"), ("POST", "/otp/verify"), ("POST", "/token/refresh"),
    ("POST", "/logout"), ("GET", "/sessions"), ("POST", "/sessions/revoke"),
    ("POST", "/account/delete"), ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/openid-configuration"),
}
for line in open(sys.argv[1]):
    for kind, event in json.loads(line).items():
        if kind == "ScenarioFinished":
            interactions = event["recorder"].get("interactions", {})
            requests += len(interactions)
            for interaction in interactions.values():
                request = interaction["request"]
                path = request["uri"].removeprefix(sys.argv[3]).split("?", 1)[0]
                route = (request["method"], path)
                status = (interaction.get("response") or {}).get("status_code", "none")
                per_route[route if route in documented else ("other", "methods")][status] += 1
            failures += sum(
                check["status"] == "failure"
                for checks in event["recorder"].get("checks", {}).values()
                for check in checks
            )
        elif kind == "NonFatalError":
            errors += 1
for (method, path), statuses in sorted(per_route.items(), key=lambda item: item[0][1]):
    detail = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items(), key=str))
    print(f"  {method:5} {path:36} {sum(statuses.values()):4}  ({detail})")
print(f"schemathesis: {requests} requests sent, {failures} failed checks, {errors} errors (exit status {sys.argv[2]})")
PY
exit "$status"
