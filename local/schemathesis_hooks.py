"""Schemathesis hooks for local/schemathesis.sh: let generated logins succeed, and let
the access-token endpoints see real tokens and real session ids.

A code comes by SMS, so a generated verify almost never guesses it. The local API runs
with test numbers (OTP_TEST_NUMBERS, CONTRACT §3b: fixed code, no SMS); these hooks send
most well-formed sends to a test number and give a well-formed verify of a
test number its code, so that the links send → verify → refresh → logout reach tokens.

The same holds for the access-token endpoints (`/sessions`, `/sessions/revoke`,
`/account/delete`, CONTRACT §7): a generated Bearer token is never one the API issued. The
links of openapi.yaml carry a verify's (or refresh's) access token into their
`Authorization` header in the stateful phase; in every phase, a well-formed request
(positive mode) with a generated token mostly gets a real one instead: one the API issued
during this run, or that of a fresh sign-in of a test number these hooks make themselves
(send + verify against FOODSAVE_API, set by local/schemathesis.sh). Refresh and logout
(its `scope`s included) get a real refresh token the same way. A session id is only known to the app from its token's `sid` or
from the list, and a link cannot carry a request header on from the list to a
revocation; so a well-formed `sessionId` sent with a real token mostly becomes that
token's `sid`, and one taken from a list (the link `listSessions` → `revokeSession`) is
sent with the token that listed it.

Only well-formed values are replaced by well-formed values: negative cases stay negative.
"""

import base64
import json
import os
import random
import re

import requests
import schemathesis

# Hypothesis reseeds the global `random` for every test case; an own generator keeps
# choosing differently from call to call (and the same way for the same seed).
RNG = random.Random(os.environ.get("SCHEMATHESIS_SEED", "1"))

TEST_NUMBERS = dict(
    pair.split("=", 1) for pair in os.environ["OTP_TEST_NUMBERS"].split(",") if pair
)
PHONE = re.compile(r"\+7[0-9]{10}")
CODE = re.compile(r"[0-9]{6}")

API = os.environ.get("FOODSAVE_API")
BEARER_PATHS = ("/sessions", "/sessions/revoke", "/account/delete")
# The latest access and refresh tokens the API issued (verify, refresh), newest last.
ISSUED: list[str] = []
REFRESH: list[str] = []
# Session id → the `Authorization` header of the `GET /sessions` that listed it.
LISTED: dict[str, str] = {}


def well_formed(pattern: re.Pattern, value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def authorization(case) -> str | None:
    for name, value in (case.headers or {}).items():
        if name.lower() == "authorization" and isinstance(value, str):
            return value
    return None


def set_authorization(case, value: str) -> None:
    headers = {
        name: v for name, v in (case.headers or {}).items() if name.lower() != "authorization"
    }
    headers["Authorization"] = value
    case.headers = headers


def positive(case) -> bool:
    """Whether the whole request was generated well-formed (its negative cases stay so)."""
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    mode = getattr(generation, "mode", None)
    return mode is None or mode.is_positive


def sid_of(header: str | None) -> str | None:
    """The `sid` claim of a Bearer JWT (not verified: the API does that)."""
    if not header or not header.startswith("Bearer "):
        return None
    parts = header[len("Bearer ") :].split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    sid = claims.get("sid") if isinstance(claims, dict) else None
    return sid if isinstance(sid, str) else None


def remember(pair: object) -> None:
    if not isinstance(pair, dict):
        return
    for key, issued in (("accessToken", ISSUED), ("refreshToken", REFRESH)):
        if isinstance(pair.get(key), str):
            issued.append(pair[key])
            del issued[:-64]


def sign_in() -> dict | None:
    """A fresh token pair of a test number (its sign-in is recent: `auth_time` is now)."""
    if not API:
        return None
    phone = RNG.choice(sorted(TEST_NUMBERS))
    try:
        requests.post(f"{API}/otp/send", json={"phone": phone}, timeout=30)
        answer = requests.post(
            f"{API}/otp/verify",
            json={"phone": phone, "code": TEST_NUMBERS[phone]},
            headers={"User-Agent": "schemathesis hooks"},
            timeout=30,
        ).json()
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("accessToken"), str):
        return None
    remember(answer)
    return answer


def real_token(key: str, issued: list[str]) -> str | None:
    """The latest token issued, or, as often, a fresh sign-in's (a deletion or a logout
    everywhere ends every token of its account)."""
    if not issued or RNG.random() < 0.5:
        pair = sign_in()
        return pair[key] if pair else None
    return issued[-1]


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    if (
        path in BEARER_PATHS
        and positive(case)
        and sid_of(authorization(case)) is None
        and RNG.random() < 0.8
        and (token := real_token("accessToken", ISSUED)) is not None
    ):
        set_authorization(case, "Bearer " + token)
    body = case.body
    if not isinstance(body, dict):
        return
    if (
        path in ("/token/refresh", "/logout")
        and positive(case)
        and isinstance(body.get("refreshToken"), str)
        and body["refreshToken"] not in REFRESH
        and RNG.random() < 0.5
        and (token := real_token("refreshToken", REFRESH)) is not None
    ):
        body["refreshToken"] = token
    phone = body.get("phone")
    if path == "/otp/send" and well_formed(PHONE, phone) and RNG.random() < 0.7:
        body["phone"] = RNG.choice(sorted(TEST_NUMBERS))
    elif (
        path == "/otp/verify"
        and isinstance(phone, str)
        and phone in TEST_NUMBERS
        and well_formed(CODE, body.get("code"))
        and RNG.random() < 0.9
    ):
        body["code"] = TEST_NUMBERS[phone]
    elif path == "/sessions/revoke":
        session_id = body.get("sessionId")
        if not isinstance(session_id, str) or not session_id:
            return
        own = sid_of(authorization(case))
        if session_id in LISTED and own is None and RNG.random() < 0.9:
            set_authorization(case, LISTED[session_id])
        elif own is not None and session_id not in LISTED and RNG.random() < 0.8:
            body["sessionId"] = own


@schemathesis.hook
def after_call(context, case, response):
    path = case.operation.path
    if response.status_code != 200 or path not in ("/otp/verify", "/token/refresh", "/sessions"):
        return
    try:
        body = response.json()
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    if path == "/sessions":
        header = authorization(case)
        for session in body.get("sessions", []):
            if header and isinstance(session, dict) and isinstance(session.get("id"), str):
                LISTED[session["id"]] = header
    else:
        remember(body)
