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
  $sudo apt-get update -qq
  # policy-rc.d is Debian's way to keep the package from starting its own sshd service.
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
