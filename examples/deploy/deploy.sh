#!/usr/bin/env bash
# Incident 000's production deploy job (deploy-to-prod.yml), played with reconcile.
#
# The job used to end with `pm2 startOrReload ecosystem.config.cjs --env production`
# (which restarts every app it names, even unchanged ones) plus cleanup scripts that
# selected processes by name and ran `pm2 delete` (which is how stock-alert died).
# Here it is: check out (done by the CI runner), build, then `reconcile apply`, which
#   - rolls out exactly the apps whose code or spec changed (the code revision is the
#     git work tree's content, less the desired-state files),
#   - touches only the `flyer-crawler` namespace, by numeric pm_id,
#   - lets a normal release through the blast-radius guard (in-place updates are
#     releases) and refuses one that deletes or replaces most of the project,
#   - gates every restarted app on its health, and journals what it did.
set -euo pipefail
cd "$(dirname "$0")"
RECONCILE="${RECONCILE:-reconcile}"

echo "== build"
node build.js

echo "== apply"
# Exit codes: 0 applied (or nothing to do), 1 refused or failed (the job fails).
"$RECONCILE" apply --auto-approve
