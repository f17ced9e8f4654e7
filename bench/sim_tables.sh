#!/usr/bin/env bash
# Prints the `tandem sim` policy tables used in the README: predicted decode and prefill
# (512-token prompt) tokens/s of each scheduling policy on the shipped hardware profiles.
# usage: bench/sim_tables.sh [path/to/tandem]   (default: build/tandem)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
tandem="${1:-$here/build/tandem}"
[ -x "$tandem" ] || { echo "tandem binary not found at $tandem (build it or pass its path)" >&2; exit 1; }
cd "$here"
run() {
  echo "### $*"
  echo '```'
  "$tandem" sim "$@"
  echo '```'
  echo
}
run --hardware configs/hardware/rtx4090-ddr5-desktop.json --shape qwen3-235b-a22b --type q4_k --expert-vram-gb 20 --policy all
run --hardware configs/hardware/rtx4090-ddr5-desktop.json --shape qwen3-30b-a3b --type q4_k --expert-vram-gb 12 --policy all
run --hardware configs/hardware/rtx3090-epyc-ddr4-8ch.json --shape qwen3-235b-a22b --type q4_k --expert-vram-gb 20 --policy all
run --hardware configs/hardware/h100-pcie-xeon.json --shape deepseek-v3 --type q4_k --expert-vram-gb 60 --policy all

# Expert deferral (tandem only; the baselines above do not change with it).
for d in 1 2 3; do
  run --hardware configs/hardware/rtx4090-ddr5-desktop.json --shape qwen3-235b-a22b --type q4_k --expert-vram-gb 20 --policy tandem --defer-experts "$d"
  run --hardware configs/hardware/rtx4090-ddr5-desktop.json --shape qwen3-30b-a3b --type q4_k --expert-vram-gb 12 --policy tandem --defer-experts "$d"
  run --hardware configs/hardware/rtx3090-epyc-ddr4-8ch.json --shape qwen3-235b-a22b --type q4_k --expert-vram-gb 20 --policy tandem --defer-experts "$d"
  run --hardware configs/hardware/h100-pcie-xeon.json --shape deepseek-v3 --type q4_k --expert-vram-gb 60 --policy tandem --defer-experts "$d"
done
