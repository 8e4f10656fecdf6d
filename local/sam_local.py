"""Helpers of local/sam-local.sh, run with the SAM CLI's venv (.venv-sam: boto3, PyYAML,
samcli). The AWS endpoint, region and credentials come from the environment the script
exports (moto on the Docker bridge's host address).

  template BUILT OUT        the `sam build` template, made usable by `sam local` here:
                            AWS_ENDPOINT_URL declared for every function (SAM passes a
                            container only the variables the template declares, and
                            --env-vars can only set those), CodeUri made absolute
  create-table NAME         the template's one DynamoDB table, with its TTL
  create-secrets AUTH JWKS  the JWKS secret with an empty set, the auth secret empty (the
                            rotation function's four steps then fill both)
  create-event-bus NAME     an EventBridge bus for the account and session events
  env-vars OUT K=V...       a --env-vars file: {"Parameters": {K: V, ...}} (every function)
  sms [--follow]            the SMS moto has "delivered" (GET /moto-api/data.json), as
                            `SMS to <phone>: <text>`; --follow prints new ones until stopped
"""

import json
import os
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def template(built: str, out: str) -> None:
    import yaml

    with open(built, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    base = os.path.dirname(os.path.abspath(built))
    env = doc.setdefault("Globals", {}).setdefault("Function", {}).setdefault("Environment", {})
    env.setdefault("Variables", {})["AWS_ENDPOINT_URL"] = ""
    for resource in doc.get("Resources", {}).values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.setdefault("Properties", {})
        code = props.get("CodeUri")
        if isinstance(code, str) and not os.path.isabs(code):
            props["CodeUri"] = os.path.join(base, code)
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False)


def create_table(name: str) -> None:
    import boto3
    from samcli.yamlhelper import yaml_parse

    with open(os.path.join(ROOT, "template.yaml"), encoding="utf-8") as f:
        doc = yaml_parse(f.read())
    tables = [r for r in doc["Resources"].values() if r.get("Type") == "AWS::DynamoDB::Table"]
    if len(tables) != 1:
        sys.exit(f"template.yaml: expected exactly one table, found {len(tables)}")
    props = tables[0]["Properties"]
    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": a["AttributeName"], "AttributeType": a["AttributeType"]}
            for a in props["AttributeDefinitions"]
        ],
        KeySchema=[
            {"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in props["KeySchema"]
        ],
    )
    ttl = props.get("TimeToLiveSpecification", {}).get("AttributeName")
    if ttl:
        ddb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"AttributeName": ttl, "Enabled": True}
        )


def create_secrets(auth: str, jwks: str) -> None:
    import boto3

    sm = boto3.client("secretsmanager")
    sm.create_secret(Name=jwks, SecretString='{"keys":[]}')
    sm.create_secret(Name=auth)


def create_event_bus(name: str) -> None:
    import boto3

    boto3.client("events").create_event_bus(Name=name)


def env_vars(out: str, pairs: list) -> None:
    values = dict(p.split("=", 1) for p in pairs)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"Parameters": values}, f, indent=2)
        f.write("\n")


def sent_sms() -> list:
    url = os.environ["AWS_ENDPOINT_URL"].rstrip("/") + "/moto-api/data.json"
    with urllib.request.urlopen(url, timeout=10) as response:
        data = json.load(response)
    return (data.get("sns") or {}).get("SMS") or []


def sms(follow: bool) -> None:
    seen = 0
    while True:
        try:
            messages = sent_sms()
        except OSError:
            if not follow:
                raise
            messages = []
        for message in messages[seen:]:
            print(f"SMS to {message['phone_number']}: {message['message']}", flush=True)
        seen = max(seen, len(messages))
        if not follow:
            return
        time.sleep(0.5)


def main(argv: list) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "template" and len(args) == 2:
        template(*args)
    elif command == "create-table" and len(args) == 1:
        create_table(args[0])
    elif command == "create-secrets" and len(args) == 2:
        create_secrets(*args)
    elif command == "create-event-bus" and len(args) == 1:
        create_event_bus(args[0])
    elif command == "env-vars" and args:
        env_vars(args[0], args[1:])
    elif command == "sms" and args in ([], ["--follow"]):
        try:
            sms(follow=bool(args))
        except KeyboardInterrupt:
            pass
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
