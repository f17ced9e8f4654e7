#!/usr/bin/env bash
# The main job: installs, builds and starts `tandem serve` on 127.0.0.1:8080. Without a model
# in the config it serves the demo model, generated on first use (random weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
exec ./build/tandem serve -c configs/default.json "$@"
