#!/usr/bin/env bash
# Installs the pinned ansible-core from PyPI into a virtual environment under the
# repository's target/ (target/ansible-venv), for tests/cli/ansible.rs and for
# trying the collection by hand. Idempotent: a venv that already has the pinned
# version is left alone. Parallel callers (nextest runs tests in parallel) take an
# exclusive flock first, so only one of them installs and the rest wait for it.
#
# Prints the venv's directory on stdout. Needs python3 with the venv module and pip
# (the Debian python3 needs `python3-venv`; a pyenv or python.org build has both).
set -euo pipefail

ANSIBLE_CORE_VERSION=2.19.14   # the newest ansible-core whose controller runs on Python 3.11

root="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="${RECONCILE_ANSIBLE_VENV:-$root/target/ansible-venv}"
python="${PYTHON:-python3}"
mkdir -p "$(dirname "$venv")"

exec 9>"$venv.lock"
flock 9

stamp="$venv/.installed-ansible-core-$ANSIBLE_CORE_VERSION"
if [ ! -f "$stamp" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "ansible-core==$ANSIBLE_CORE_VERSION" >&2
    touch "$stamp"
fi
echo "$venv"
