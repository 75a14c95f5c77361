#!/usr/bin/env bash
# Train several seeds of one recipe side by side on one GPU, then print each seed's validation figures
# (the corpus's synthetic held-out splits, never the eval sets) and which seed they pick.
#   bash scripts/train_seeds.sh CONFIG CORPUS OUTDIR ["0 1 2"] [TIME_LIMIT_S]
# Needs only torch, numpy, scipy and rich (no espeak-ng, mediapipe or pocketsphinx): build the corpus first
# with `dubtool corpus` on a CPU machine and copy it over. Runs from a checkout with PYTHONPATH set to it.
set -euo pipefail
cfg=$1; corpus=$2; out=$3; seeds=${4:-"0 1 2"}; limit=${5:-520}
PY=${PYTHON:-python3}
mkdir -p "$out"
cfgdir=$(mktemp -d)
for s in $seeds; do
  "$PY" - "$cfg" "$cfgdir/seed$s.json" "$s" <<'PYEOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["train"]["seed"] = int(sys.argv[3])
json.dump(cfg, open(sys.argv[2], "w"), indent=2)
PYEOF
  "$PY" -m dubtool.train "$cfgdir/seed$s.json" "$corpus" "$out/seed$s.pt" cuda - "$limit" > "$out/seed$s.log" 2>&1 &
done
wait
"$PY" scripts/seed_spread.py "$out"/seed*.pt
