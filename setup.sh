#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with vae-sweep and its test tools installed.
# Offline machines with a local copy of the raw MNIST files: VAE_SWEEP_RAW_MIRROR points at a folder laid out
# like torchvision's (MNIST/raw/*.gz, FashionMNIST/raw/*.gz); the files are copied into ./data (default:
# ../shared/data when it exists). Elsewhere torchvision downloads them on first use.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,scale]'

mirror="${VAE_SWEEP_RAW_MIRROR:-../shared/data}"
for dataset in MNIST FashionMNIST; do
  if [ -d "$mirror/$dataset/raw" ] && [ ! -e "data/$dataset/raw" ]; then
    mkdir -p "data/$dataset/raw"
    cp "$mirror/$dataset/raw/"*.gz "data/$dataset/raw/"
    echo "copied $dataset raw files from $mirror into data/$dataset/raw"
  fi
done
echo "ready: .venv/bin/python -m vae_sweep   (tests: .venv/bin/python -m pytest)"
