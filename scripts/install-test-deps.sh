#!/usr/bin/env bash
# Debian packages the tests need beyond the toolchain: git (pull mode drives the
# system git), openssh-client/-server (pull mode over ssh: the tests start their own
# sshd on a loopback port), openssl (the https test makes its own CA). Idempotent:
# installs only what is missing. Run as root (CI) or with sudo.
set -euo pipefail
missing=()
command -v git >/dev/null || missing+=(git)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # The tests start their own sshd on loopback; the package must not start the
  # system's on port 22. policy-rc.d (exit 101) is Debian's way to say so.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ -z "$made_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
fi
