"""Checks of template.yaml as CloudFormation will see it: the SAM transform's output
(samtranslator, the SAM CLI's own), for each deployment variant. Run by check-infra.sh
with the SAM CLI's venv.

- JWT_ISSUER (CONTRACT §5) resolves, for every function and the Issuer output, to the
  custom domain's URL with a DomainName and to the API's own execute-api URL without one
  (the first deploy needs no second one), and PublicBaseUrl overrides both;
- no resource depends on itself through Ref, GetAtt, Sub or DependsOn (the functions
  refer to the API and the API's routes to the functions);
- samconfig.toml: every environment but `dev` keeps the table's deletion protection;
  staging and prod name a region, allow +77 only, cap the SMS price and tell someone of
  alarms, and a placeholder left in them is one the template's parameter patterns refuse
  (a deploy stops there, naming it);
- the secrets guard: the auth secret's GenerateSecretString and the JWK Set secret's
  SecretString are exactly what the first deploy wrote. CloudFormation generates a new
  value when GenerateSecretString changes and writes SecretString again when it
  changes, which would replace the live pepper and signing keys (every code and session
  lost) or empty the published keys; the rotation function owns both values after the
  first deploy. Both secrets are also kept when replaced or deleted (Retain).
"""

import copy
import os
import shlex
import tomllib
import json
import re
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

REGION = "eu-central-1"
URL_SUFFIX = "amazonaws.com"
API_ID = "a1b2c3d4e5"

# What the first deploy wrote; never to change (see the module's docs).
AUTH_SECRET_VALUE = {
    "GenerateSecretString": {
        "SecretStringTemplate": '{"signingKeys":[]}',
        "GenerateStringKey": "otpPepper",
        "PasswordLength": 64,
        "ExcludePunctuation": True,
    }
}
JWKS_SECRET_VALUE = {"SecretString": '{"keys":[]}'}

VARIANTS = [
    (
        "no domain",
        {},
        f"https://{API_ID}.execute-api.{REGION}.{URL_SUFFIX}/api/v1/auth",
    ),
    (
        "custom domain with a hosted zone",
        {
            "DomainName": "api.foodsave.kz",
            "CertificateArn": "arn:aws:acm:eu-central-1:123456789012:certificate/0a1b2c3d",
            "HostedZoneId": "Z0123456789ABCDEFGHIJ",
        },
        "https://api.foodsave.kz/api/v1/auth",
    ),
    (
        "custom domain, DNS elsewhere",
        {
            "DomainName": "auth.example.com",
            "CertificateArn": "arn:aws:acm:eu-central-1:123456789012:certificate/0a1b2c3d",
        },
        "https://auth.example.com/api/v1/auth",
    ),
    (
        "PublicBaseUrl override",
        {"PublicBaseUrl": "https://cdn.foodsave.kz/api/v1/auth"},
        "https://cdn.foodsave.kz/api/v1/auth",
    ),
]


class NoManagedPolicies:
    """The template names no AWS managed policy: nothing to look up."""

    def load(self):
        return {}


def fail(message):
    sys.exit(f"check_template: {message}")


class Resolver:
    def __init__(self, template, parameters):
        self.template = template
        self.parameters = {
            name: str(spec.get("Default", ""))
            for name, spec in template.get("Parameters", {}).items()
        }
        self.parameters.update(parameters)
        self.conditions = {}

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = self.truth(self.template["Conditions"][name])
        return self.conditions[name]

    def truth(self, node):
        (fn, args), = node.items()
        if fn == "Fn::Equals":
            return self.value(args[0]) == self.value(args[1])
        if fn == "Fn::Not":
            return not self.truth(args[0])
        if fn == "Fn::And":
            return all(self.truth(a) for a in args)
        if fn == "Fn::Or":
            return any(self.truth(a) for a in args)
        if fn == "Condition":
            return self.condition(args)
        fail(f"unknown condition function {fn}")

    def value(self, node):
        if isinstance(node, (str, int, float, bool)):
            return str(node)
        if isinstance(node, dict) and len(node) == 1:
            (fn, args), = node.items()
            if fn == "Ref":
                return self.ref(args)
            if fn == "Fn::If":
                return self.value(args[1] if self.condition(args[0]) else args[2])
            if fn == "Fn::Sub":
                text = args if isinstance(args, str) else args[0]
                return re.sub(r"\$\{([^}!]+)\}", lambda m: self.ref(m.group(1)), text)
            if fn == "Condition":
                return str(self.condition(args))
        fail(f"cannot resolve {json.dumps(node)}")

    def ref(self, name):
        if name in self.parameters:
            return self.parameters[name]
        return {
            "AWS::Region": REGION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::Partition": "aws",
            "AWS::AccountId": "123456789012",
            "AWS::StackName": "foodsave-auth",
            "HttpApi": API_ID,
        }.get(name) or fail(f"cannot resolve a reference to {name}")

    def exists(self, resource):
        condition = resource.get("Condition")
        return condition is None or self.condition(condition)


def dependencies(node, names):
    """The resources `node` refers to."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str) and value in names:
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) else value.split(".")[0]
                if target in names:
                    found.add(target)
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                for ref in re.findall(r"\$\{([^}!]+)\}", text):
                    if ref.split(".")[0] in names:
                        found.add(ref.split(".")[0])
                if not isinstance(value, str):
                    found |= dependencies(value[1], names)
            else:
                found |= dependencies(value, names)
    elif isinstance(node, list):
        for item in node:
            found |= dependencies(item, names)
    return found


def check_no_cycle(resources, variant):
    names = set(resources)
    graph = {}
    for name, resource in resources.items():
        depends = resource.get("DependsOn", [])
        depends = [depends] if isinstance(depends, str) else depends
        graph[name] = (dependencies(resource.get("Properties", {}), names) | set(depends)) & names
    state = {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            fail(f"{variant}: circular dependency {' -> '.join(path + [name])}")
        state[name] = "open"
        for dep in sorted(graph[name]):
            visit(dep, path + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def main():
    # The transform asks for a region (pseudo parameters); no AWS call is made.
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    with open("template.yaml", encoding="utf-8") as f:
        source = yaml_parse(f.read())
    # As `sam package` leaves it: code in S3 (the transform wants an S3 URI).
    for name, resource in source["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://foodsave-auth-artifacts/{name}.zip"
    for variant, parameters, issuer in VARIANTS:
        cfn = transform(copy.deepcopy(source), parameters, NoManagedPolicies())
        resolver = Resolver(cfn, parameters)
        resources = {n: r for n, r in cfn["Resources"].items() if resolver.exists(r)}
        functions = {n: r for n, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
        issuers = {}
        for name, function in functions.items():
            env = function["Properties"].get("Environment", {}).get("Variables", {})
            if "JWT_ISSUER" in env:
                issuers[name] = resolver.value(env["JWT_ISSUER"])
        if len(issuers) != len(functions) or set(issuers.values()) != {issuer}:
            fail(f"{variant}: JWT_ISSUER {issuers}, expected {issuer} for all {sorted(functions)}")
        output = resolver.value(cfn["Outputs"]["Issuer"]["Value"])
        if output != issuer:
            fail(f"{variant}: output Issuer {output}, expected {issuer}")
        check_no_cycle(resources, variant)
        has_domain = "ApiDomain" in resources
        if has_domain != bool(parameters.get("DomainName")):
            fail(f"{variant}: custom domain resources {'present' if has_domain else 'missing'}")
        if ("ApiDomainRecord" in resources) != bool(parameters.get("HostedZoneId")):
            fail(f"{variant}: the DNS record follows HostedZoneId")
        print(f"{variant}: JWT_ISSUER of {len(functions)} functions = {issuer}, no cycle among {len(resources)} resources")

        for name, value in (("AuthSecret", AUTH_SECRET_VALUE), ("JwksSecret", JWKS_SECRET_VALUE)):
            secret = resources[name]
            props = secret["Properties"]
            for key, expected in value.items():
                if props.get(key) != expected:
                    fail(
                        f"{name}.{key} changed: a stack update would overwrite the live secret "
                        f"(the pepper and signing keys, or the published keys). Keep it as "
                        f"{json.dumps(expected)}; the rotation function owns the value."
                    )
            for other in ("SecretString", "GenerateSecretString"):
                if other not in value and other in props:
                    fail(f"{name}: {other} would be applied on every update")
            for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
                if secret.get(policy) != "Retain":
                    fail(f"{name}: {policy} must be Retain (the keys outlive a replacement)")
    print("secrets guard: AuthSecret and JwksSecret values as first deployed, both retained")
    check_samconfig(source)


def check_samconfig(template):
    with open("samconfig.toml", "rb") as f:
        config = tomllib.load(f)
    parameters = template["Parameters"]
    for env, sections in config.items():
        if not isinstance(sections, dict):
            continue
        deploy = sections.get("deploy", {}).get("parameters", {})
        overrides = dict(
            pair.split("=", 1) for pair in shlex.split(deploy.get("parameter_overrides", ""))
        )
        for name, value in overrides.items():
            if name not in parameters:
                fail(f"samconfig.toml [{env}]: {name} is not a template parameter")
            pattern = parameters[name].get("AllowedPattern")
            allowed = parameters[name].get("AllowedValues")
            valid = (pattern is None or re.fullmatch(pattern, value)) and (
                allowed is None or value in [str(a) for a in allowed]
            )
            if value.startswith("REPLACE_WITH_") and valid:
                fail(f"samconfig.toml [{env}]: placeholder {name}={value} would deploy")
            if not value.startswith("REPLACE_WITH_") and not valid:
                fail(f"samconfig.toml [{env}]: {name}={value} is refused by the template")
        protected = overrides.get(
            "TableDeletionProtection", parameters["TableDeletionProtection"]["Default"]
        )
        if env != "dev" and protected != "true":
            fail(f"samconfig.toml [{env}]: the table's deletion protection is off")
        if env in ("staging", "prod"):
            missing = [
                what
                for what, ok in (
                    ("a region", bool(deploy.get("region"))),
                    ("AllowedPhonePrefixes=+77", overrides.get("AllowedPhonePrefixes") == "+77"),
                    ("SmsMaxPriceUsd", bool(overrides.get("SmsMaxPriceUsd"))),
                    ("AlarmEmail or AlarmTopicArn", bool(overrides.get("AlarmEmail") or overrides.get("AlarmTopicArn"))),
                )
                if not ok
            ]
            if missing:
                fail(f"samconfig.toml [{env}] lacks {', '.join(missing)}")
    print(f"samconfig.toml: {', '.join(k for k, v in config.items() if isinstance(v, dict))} keep deletion protection (but dev); staging and prod complete")


if __name__ == "__main__":
    main()
