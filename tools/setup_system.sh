#!/usr/bin/env bash
# Debian packages the suite needs on the CI/demo machine (root, apt). Idempotent and quiet when done.
#   fashion-mnist: the bundled real data set; tcmalloc: faster CPU training (FACTS.md);
#   chromium: the report page's render test. SLURM packages are installed by slurm/cluster.sh up.
set -euo pipefail
want=(dataset-fashion-mnist libtcmalloc-minimal4 chromium)
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
