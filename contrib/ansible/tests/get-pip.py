"""Stands in for the `get-pip.py` that `ansible-test` downloads to bootstrap pip in
the virtual environments of its sanity tests. ansible-test fetches that script from
its own file host, which this project's machines cannot reach; this one gets the
same result from Python's bundled pip (`ensurepip`) and PyPI: it installs the
packages ansible-test asks for (`pip==VERSION`) with the options it passes.
sanity.sh puts it where ansible-test looks first (its cache)."""

import subprocess
import sys

# get-pip.py's own options, which pip install does not know.
OWN_OPTIONS = ('--no-setuptools', '--no-wheel')

args = [a for a in sys.argv[1:] if a not in OWN_OPTIONS]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
