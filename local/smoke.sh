#!/usr/bin/env bash
# Smoke test of a running FoodSave Auth API: the whole login flow, one line per step.
#
#   local/smoke.sh BASE_URL PHONE [CODE]
#
# BASE_URL is the issuer, e.g. http://127.0.0.1:3000/api/v1/auth (make dev) or
# https://api.foodsave.kz/api/v1/auth (the stack's Issuer output). PHONE gets a code by
# SMS; CODE is that code when known in advance (a test number of OTP_TEST_NUMBERS),
# otherwise the script asks for it on the terminal. Steps: discovery document (issuer
# equals BASE_URL), JWK Set, send, verify, GET /sessions, refresh, logout, and a refresh
# after the logout, which must be refused with 401. The first unexpected answer stops it
# with exit status 1. Tokens are never printed (only their length), the phone is masked.
# Needs curl and python3. docs/deploy.md, "Smoke test".
set -euo pipefail

usage() {
    echo "usage: local/smoke.sh BASE_URL PHONE [CODE]" >&2
    echo "  e.g. local/smoke.sh http://127.0.0.1:3000/api/v1/auth +77001234567" >&2
    echo "       local/smoke.sh https://api.foodsave.kz/api/v1/auth +77000000001 123456" >&2
    exit 2
}

[[ $# -ge 2 && $# -le 3 ]] || usage
base=${1%/}
phone=$2
code=${3:-}
case $base in
    http://?* | https://?*) ;;
    *) echo "smoke: BASE_URL must be an http(s) URL, the issuer (…/api/v1/auth)" >&2; usage ;;
esac
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "smoke: $tool is required" >&2; exit 2; }
done

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
agent="foodsave-smoke/1 (local/smoke.sh)"
total=9
step=0

# JSON reading, checking and masking; tokens travel through files in $work only, never
# through a command line or the terminal.
cat >"$work/helper.py" <<'PY'
import base64, json, os, re, sys

cmd, args = sys.argv[1], sys.argv[2:]

def bad(message):
    print(message)
    sys.exit(1)

def json_object(path, otherwise="not JSON"):
    """The JSON object in the file at `path`; anything else fails the step."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.loads(f.read())
    except ValueError:
        bad(otherwise)
    if not isinstance(value, dict):
        bad(otherwise)
    return value

def secret(path):
    with open(path, encoding="utf-8") as f:
        return f.read()

def keep(path, value):
    with open(path, "w", encoding="utf-8") as f:
        f.write(value)

def claims(jwt):
    header, payload = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
                       for part in jwt.split(".")[:2])
    return header, payload

if cmd == "mask":  # a body for an error message: tokens replaced by their length
    raw = open(args[0], encoding="utf-8", errors="replace").read()
    try:
        value = json.loads(raw)
        if isinstance(value, dict):
            for key in ("accessToken", "refreshToken"):
                if isinstance(value.get(key), str):
                    value[key] = f"<{len(value[key])} chars>"
        raw = json.dumps(value, ensure_ascii=False)
    except ValueError:
        raw = re.sub(r"eyJ[A-Za-z0-9_.-]{20,}", "<token>", raw)
    print(raw[:400] + ("…" if len(raw) > 400 else ""))
elif cmd == "body":  # a JSON body from name=value pairs, "@file" values read from files
    out = {}
    for pair in args:
        name, value = pair.split("=", 1)
        out[name] = secret(value[1:]) if value.startswith("@") else value
    print(json.dumps(out))
elif cmd == "discovery":
    base, = args[1:]
    doc = json_object(args[0])
    if doc.get("issuer") != base:
        bad(f"issuer is {doc.get('issuer')!r}, not BASE_URL {base!r}")
    if not isinstance(doc.get("jwks_uri"), str):
        bad("no jwks_uri")
    keep(args[0] + ".jwks_uri", doc["jwks_uri"])
    print(f"issuer = BASE_URL, jwks_uri {doc['jwks_uri'][len(base):] if doc['jwks_uri'].startswith(base) else doc['jwks_uri']}")
elif cmd == "jwks":
    keys = json_object(args[0], "not a JWK Set").get("keys")
    if not isinstance(keys, list) or not keys:
        bad("no key in the JWK Set")
    kids = [k.get("kid") for k in keys if isinstance(k, dict)]
    keep(args[1], "\n".join(str(k) for k in kids))
    kinds = ", ".join(f"{k.get('kty')} {k.get('alg')}" for k in keys if isinstance(k, dict))
    print(f"{len(keys)} key{'s' if len(keys) != 1 else ''} ({kinds})")
elif cmd == "sent":
    body = json_object(args[0])
    if body.get("message") != "OTP sent":
        bad("unexpected body")
    print(f"OTP sent, retryAfterSeconds {body.get('retryAfterSeconds')}")
elif cmd == "pair":  # a token pair: keep both tokens, check the access token's iss and kid
    path, base, kids, access_out, refresh_out = args
    pair = json_object(path)
    access, refresh = pair.get("accessToken"), pair.get("refreshToken")
    if not isinstance(access, str) or not isinstance(refresh, str) or pair.get("tokenType") != "Bearer":
        bad("not a token pair")
    try:
        header, payload = claims(access)
    except (ValueError, TypeError):
        bad("the access token is not a JWT")
    if payload.get("iss") != base:
        bad(f"the access token's iss is {payload.get('iss')!r}, not BASE_URL")
    if header.get("kid") not in open(kids, encoding="utf-8").read().split("\n"):
        bad(f"the access token's kid {header.get('kid')!r} is not in the JWK Set")
    previous = secret(refresh_out) if os.path.exists(refresh_out) else None
    if refresh == previous:
        bad("the refresh token was not rotated")
    keep(access_out, access)
    keep(refresh_out, refresh)
    print(f"token pair: accessToken <{len(access)} chars> ({header.get('alg')}, {header.get('typ')}, "
          f"kid in the JWK Set, iss = BASE_URL), refreshToken <{len(refresh)} chars>, expiresIn {pair.get('expiresIn')}")
elif cmd == "sessions":
    sessions = json_object(args[0]).get("sessions")
    if not isinstance(sessions, list):
        bad("no sessions list")
    current = [s for s in sessions if isinstance(s, dict) and s.get("current") is True]
    if len(current) != 1:
        bad(f"{len(current)} sessions marked current, expected 1")
    print(f"{len(sessions)} live session{'s' if len(sessions) != 1 else ''}, 1 current "
          f"(userAgent {current[0].get('userAgent')!r})")
elif cmd == "empty":
    body = json_object(args[0])
    if body != {}:
        bad("expected {}")
    print("{}")
elif cmd == "error":
    want = args[1]
    body = json_object(args[0])
    if body.get("code") != want:
        bad(f"code {body.get('code')!r}, expected {want}")
    print(want)
elif cmd == "maskphone":  # as the service logs it: +770******67
    p = args[0]
    print(p[:4] + "*" * max(len(p) - 6, 0) + p[-2:] if len(p) > 6 else "***")
else:
    sys.exit(f"unknown command {cmd}")
PY
helper() { python3 "$work/helper.py" "$@"; }

fail() {
    echo "FAIL step $step/$total: $*" >&2
    exit 1
}

# request METHOD URL [BODY-FILE] [bearer]: the answer's body lands in $work/body, its
# status in $status.
request() {
    local method=$1 url=$2 data=${3:-} bearer=${4:-}
    local args=(-sS -o "$work/body" -w '%{http_code}' --max-time 30 -X "$method"
        -A "$agent" -H 'Accept: application/json')
    if [[ -n $data ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "@$data")
    fi
    if [[ -n $bearer ]]; then
        printf 'Authorization: Bearer %s\n' "$(cat "$work/access")" >"$work/auth-header"
        args+=(-H "@$work/auth-header")
    fi
    : >"$work/body"
    if ! status=$(curl "${args[@]}" "$url" 2>"$work/curl-err"); then
        fail "$method $url: no HTTP answer ($(tr '\n' ' ' <"$work/curl-err"))"
    fi
}

# expect STEP-LABEL WANTED-STATUS CHECK [ARGS…]: print the step's line, or fail.
expect() {
    local label=$1 want=$2 check=$3
    shift 3
    local detail
    if [[ $status != "$want" ]]; then
        printf '%s/%s %-38s %s\n' "$step" "$total" "$label" "$status"
        fail "$label: expected HTTP $want, got $status: $(helper mask "$work/body")"
    fi
    if ! detail=$(helper "$check" "$work/body" "$@"); then
        printf '%s/%s %-38s %s\n' "$step" "$total" "$label" "$status"
        fail "$label: $detail: $(helper mask "$work/body")"
    fi
    printf '%s/%s %-38s %s  %s\n' "$step" "$total" "$label" "$status" "$detail"
}

# Without CODE the code is asked for on the terminal: make sure there is one before an
# SMS is spent.
if [[ -z $code ]]; then
    { exec 3</dev/tty; } 2>/dev/null \
        || { echo "smoke: no terminal to ask for the SMS code on; give it as CODE" >&2; exit 2; }
elif [[ ! $code =~ ^[0-9]{6}$ ]]; then
    echo "smoke: CODE must be 6 digits" >&2
    exit 2
fi

echo "FoodSave Auth smoke test of $base, phone $(helper maskphone "$phone")"

step=1
request GET "$base/.well-known/openid-configuration"
expect "GET  /.well-known/openid-configuration" 200 discovery "$base"
jwks_uri=$(cat "$work/body.jwks_uri")

step=2
request GET "$jwks_uri"
expect "GET  /.well-known/jwks.json" 200 jwks "$work/kids"

step=3
helper body "phone=$phone" >"$work/send.json"
request POST "$base/otp/send" "$work/send.json"
expect "POST /otp/send" 200 sent

step=4
if [[ -z $code ]]; then
    read -r -u 3 -p "code from the SMS: " code || fail "no code read from the terminal"
    exec 3<&-
fi
[[ $code =~ ^[0-9]{6}$ ]] || fail "the code must be 6 digits"
printf '%s' "$code" >"$work/code"
helper body "phone=$phone" "code=@$work/code" >"$work/verify.json"
request POST "$base/otp/verify" "$work/verify.json"
expect "POST /otp/verify" 200 pair "$base" "$work/kids" "$work/access" "$work/refresh"

step=5
request GET "$base/sessions" "" bearer
expect "GET  /sessions (Bearer)" 200 sessions

step=6
helper body "refreshToken=@$work/refresh" >"$work/refresh.json"
request POST "$base/token/refresh" "$work/refresh.json"
expect "POST /token/refresh" 200 pair "$base" "$work/kids" "$work/access" "$work/refresh"

step=7
helper body "refreshToken=@$work/refresh" >"$work/logout.json"
request POST "$base/logout" "$work/logout.json"
expect "POST /logout" 200 empty

step=8
request POST "$base/token/refresh" "$work/logout.json"
expect "POST /token/refresh (logged-out token)" 401 error INVALID_REFRESH_TOKEN

step=9
request POST "$base/token/refresh" "$work/refresh.json"
expect "POST /token/refresh (first token)" 401 error INVALID_REFRESH_TOKEN

echo "OK: $total steps against $base"
