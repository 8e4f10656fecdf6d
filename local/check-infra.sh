#!/usr/bin/env bash
# Infrastructure checks: sam validate --lint, cfn-lint, checkov, and sam build (every
# function gets a bootstrap). Tools come from pinned project venvs; checkov has its own,
# since it pins packages SAM needs at other versions.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
"$here/setup-venv.sh" "$root/.venv-sam" "$here/requirements-sam.txt"
"$here/setup-venv.sh" "$root/.venv-checkov" "$here/requirements-checkov.txt"
export SAM_CLI_TELEMETRY=0 SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
export PATH="$root/.venv-sam/bin:$PATH"

echo "== sam validate --lint"
sam validate --lint
echo "== cfn-lint"
cfn-lint template.yaml
echo "== the transformed template: JWT_ISSUER with and without a domain, no cycle, secrets guard"
"$root/.venv-sam/bin/python" "$here/check_template.py" 2>&1 | grep -v '^There are unpublished metrics'
echo "== docs/examples/consumer.yaml (the snippets of docs/integration.md)"
sam validate --lint -t docs/examples/consumer.yaml
"$root/.venv-sam/bin/python" - <<'PY'
import re, sys
doc = open("docs/integration.md", encoding="utf-8").read()
example = open("docs/examples/consumer.yaml", encoding="utf-8").read()
blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
stale = [b for b in blocks if b not in example]
if not blocks or stale:
    sys.exit("docs/integration.md: a yaml snippet is not in docs/examples/consumer.yaml:\n" + "".join(stale))
print(f"{len(blocks)} snippets of docs/integration.md are in docs/examples/consumer.yaml")
PY
echo "== checkov"
# --skip-download: the checks ship with checkov; without it, it asks Prisma Cloud for
# guideline links first (a traceback on machines without internet access).
"$root/.venv-checkov/bin/checkov" -f template.yaml --framework cloudformation --quiet --compact \
  --skip-download
echo "== sam build"
# The template's default architecture, x86_64, the one this toolchain builds and CI
# tests (arm64 is a parameter: template.yaml says what it needs).
arch=x86_64
# The release profile links each function with fat LTO and one codegen unit: about a
# minute per binary on CI's 2 cores, 9 minutes in all. This check builds the same code
# with thin-local LTO and parallel codegen (what sam local then runs); `sam build` for a
# deploy, and `make bench`, use the profile as it is.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 sam build
missing=0
for fn in $(grep -E '^  [A-Za-z]+Function:$' template.yaml | tr -d ' :'); do
  if [ -x ".aws-sam/build/$fn/bootstrap" ]; then
    echo "built $fn: $(stat -c %s ".aws-sam/build/$fn/bootstrap") bytes ($arch)"
  else
    echo "sam build produced no bootstrap for $fn" >&2
    missing=1
  fi
done
exit "$missing"
