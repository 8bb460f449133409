#!/usr/bin/env bash
# Runs `ansible-test sanity` on the reconcile.pm2 collection with the ansible-core of
# setup-venv.sh, in the current Python (--local). ansible-test gives each sanity
# test a virtual environment of its own (pylint, yamllint, validate-modules, ...),
# installed from PyPI on the first run and kept under target/ansible-test-home (its
# HOME), so later runs are offline and quick. The pip bootstrap it would download
# from its own file host is replaced by get-pip.py beside this script.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$(bash "$here/setup-venv.sh")"
home="$root/target/ansible-test-home"
mkdir -p "$home"

exec 9>"$home.lock"
flock 9

# The pip version ansible-test bootstraps (get_pip_<version>.py is its cache name).
python_version="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
pip_version="$("$venv/bin/python" -c '
import sys, types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))["pip"])' "$python_version")"
mkdir -p "$home/.ansible/test/cache"
cp "$here/get-pip.py" "$home/.ansible/test/cache/get_pip_${pip_version//./_}.py"

cd "$root/contrib/ansible/ansible_collections/reconcile/pm2"
HOME="$home" PATH="$venv/bin:$PATH" ansible-test sanity --python "$python_version" --local --color no "$@"
