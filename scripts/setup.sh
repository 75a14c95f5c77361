#!/usr/bin/env bash
# Set up dubtool on a fresh Debian/Ubuntu machine: system packages, a virtualenv in .venv,
# the CPU build of torch where one lies on local disk, and the face-tracker model bundle.
#   bash scripts/setup.sh          # runtime only
#   bash scripts/setup.sh --dev    # plus test tools and test material
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0; [ "${1:-}" = "--dev" ] && DEV=1

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
APT_PKGS="ffmpeg espeak-ng libespeak-ng1 libegl1 libegl-mesa0 libgl1-mesa-dri rubberband-cli"
[ "$DEV" = 1 ] && APT_PKGS="$APT_PKGS assimp-utils chromium sox asterisk-core-sounds-en-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-es-wav asterisk-core-sounds-ru-wav asterisk-core-sounds-en asterisk-core-sounds-fr asterisk-core-sounds-es asterisk-core-sounds-ru pocketsphinx-testdata klettres-data asterisk-core-sounds-it-wav asterisk-core-sounds-it"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  echo "[setup] apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY="${PYTHON:-python3.11}"; command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# A bare `torch` requirement pulls a multi-GB CUDA build; prefer a CPU wheel from local disk
# (PIP_FIND_LINKS); elsewhere pip resolves torch as usual (install a CPU build first if you want one).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if ls ${PIP_FIND_LINKS:-/opt/wheels}/torch-*+cpu-cp311-*.whl >/dev/null 2>&1; then
    $PIP install -q "$(ls ${PIP_FIND_LINKS:-/opt/wheels}/torch-*+cpu-cp311-*.whl | sort | tail -n1)"
  fi
fi
EXTRAS="keyframes"; [ "$DEV" = 1 ] && EXTRAS="keyframes,dev,ray"  # ray: tests/test_ray.py runs a real 2-node cluster
$PIP install -q -e ".[$EXTRAS]"
.venv/bin/dubtool setup-models
echo "[setup] ready: .venv/bin/dubtool --help"
