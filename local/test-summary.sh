#!/usr/bin/env bash
# Sum cargo test's per-binary "test result:" lines into one closing line:
#   tests: N passed, M failed
# Usage: test-summary.sh LOG
set -euo pipefail
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed;?$/) p += $i
         if ($(i+1) ~ /^failed;?$/) f += $i
       }
     }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$1"
