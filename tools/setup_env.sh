#!/usr/bin/env bash
# Create (once) the Python environment for this checkout and print its path.
#
# The venv lives OUTSIDE the checkout, keyed by a hash of the pinned requirements, so that a fresh
# clone (CI's) reuses it and a changed requirement makes a new one. torch alone is 5.5 GB.
#   tools/setup_env.sh          -> builds if needed, prints the venv path on the last line
#   SIMCLR_ENV_ROOT=/path ...   -> where venvs go (default ~/.cache/simclr-suite)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${SIMCLR_ENV_ROOT:-$HOME/.cache/simclr-suite}"
py="${SIMCLR_PYTHON:-python3}"

reqs="$("$py" - "$here/pyproject.toml" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = list(p["dependencies"]) + list(p.get("optional-dependencies", {}).get("test", []))
print("\n".join(sorted(deps)))
PY
)"
hash="$(printf '%s\n%s\n' "$("$py" -c 'import sys; print(sys.version.split()[0])')" "$reqs" | sha256sum | cut -c1-12)"
venv="$root/venv-$hash"

if [ ! -f "$venv/.complete" ]; then
    echo "[setup] creating $venv (first time only; torch is large)" >&2
    rm -rf "$venv"
    mkdir -p "$root"
    "$py" -m venv "$venv"
    printf '%s\n' "$reqs" > "$venv/requirements.txt"
    "$venv/bin/pip" install --quiet --upgrade pip setuptools wheel >&2
    "$venv/bin/pip" install --quiet -r "$venv/requirements.txt" >&2
    touch "$venv/.complete"
fi

# The project itself: an editable install pointing at THIS checkout (cheap; redone when the
# checkout moved, e.g. CI's fresh clone in another folder), so console scripts work.
marker="$venv/.checkout"
stamp="$here $(sha256sum "$here/pyproject.toml" | cut -c1-12)"  # console scripts follow pyproject.toml
if [ "$(cat "$marker" 2>/dev/null)" != "$stamp" ]; then
    "$venv/bin/pip" install --quiet --no-deps --no-build-isolation -e "$here" >&2
    printf "%s" "$stamp" > "$marker"
fi
echo "$venv"
