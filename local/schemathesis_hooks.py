"""Schemathesis hooks for local/schemathesis.sh: let generated logins succeed.

A code comes by SMS, so a generated verify almost never guesses it. The local API runs
with test numbers (OTP_TEST_NUMBERS, CONTRACT §3b: fixed code, no SMS); these hooks send
most well-formed sends to a test number and give a well-formed verify of a
test number its code, so that the links send → verify → refresh → logout reach tokens.
Only well-formed values are replaced by well-formed values: negative cases stay negative.
"""

import os
import random
import re

import schemathesis

# Hypothesis reseeds the global `random` for every test case; an own generator keeps
# choosing differently from call to call (and the same way for the same seed).
RNG = random.Random(os.environ.get("SCHEMATHESIS_SEED", "1"))

TEST_NUMBERS = dict(
    pair.split("=", 1) for pair in os.environ["OTP_TEST_NUMBERS"].split(",") if pair
)
PHONE = re.compile(r"\+7[0-9]{10}")
CODE = re.compile(r"[0-9]{6}")


def well_formed(pattern: re.Pattern, value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict):
        return
    path = case.operation.path
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
