#!/usr/bin/env bash
# Sum cargo test's per-binary "test result:" lines into one closing line:
#   tests: N passed, M failed
# and the schemathesis phase's own line, if it ran.
# Usage: test-summary.sh LOG
set -euo pipefail
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed;?$/) p += $i
         if ($(i+1) ~ /^failed;?$/) f += $i
       }
     }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$1"
# The schemathesis phase reports its own count (local/schemathesis.sh).
grep -h '^schemathesis: ' "$1" || true
# What the run left on disk (a full disk is the one failure no test names).
echo "disk: target/ $(du -sh target 2>/dev/null | cut -f1), $(df -Ph . | awk 'NR == 2 { print $4 }') free"
