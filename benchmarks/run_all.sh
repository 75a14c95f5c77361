#!/usr/bin/env bash
# Run every benchmarks/bench_*.py and collect their figure lines (one line per figure, medians of
# several runs) under a header describing the machine. Usage:
#   benchmarks/run_all.sh [OUT.txt]          (default build/benchmarks.txt; also printed; each benchmark's
#                                            stderr in OUT.logs/, beside OUT, wherever OUT is)
# A failing benchmark is reported as "<name>: FAILED (exit N)" and the others still run; the script
# exits non-zero if any failed. BENCH_TIMEOUT (seconds, default 900) bounds each script.
set -u
# OUT is taken relative to the caller's folder (then we work from the repository root).
if [ $# -ge 1 ]; then
  case "$1" in /*) OUT="$1" ;; *) OUT="$PWD/$1" ;; esac
fi
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${OUT:-build/benchmarks.txt}"
LOGS="${OUT%.txt}.logs"
mkdir -p "$(dirname "$OUT")" "$LOGS" || { echo "run_all.sh: cannot create $(dirname "$OUT") or $LOGS" >&2; exit 2; }
TMP="$(mktemp "${OUT}.XXXXXX")"
trap 'rm -f "$TMP"' EXIT

cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo 2>/dev/null)"
{
  echo "# dubtool benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ) git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "# machine: nproc $(nproc), ${cpu:-unknown CPU}, ${mem:-? RAM}, $(uname -sm)"
  echo "# python: $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "threads", torch.get_num_threads())' 2>/dev/null)"
} | tee "$TMP"

failed=0
shopt -s nullglob
for script in benchmarks/bench_*.py; do
  name="$(basename "$script" .py)"
  echo "## $name" | tee -a "$TMP"
  # Figure lines go to stdout; progress/noise on stderr is kept out of the table.
  timeout "${BENCH_TIMEOUT:-900}" "$PY" "$script" 2>"$LOGS/${name}.stderr" | tee -a "$TMP"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "$name: FAILED (exit $rc; see $LOGS/${name}.stderr)" | tee -a "$TMP"
    failed=1
  fi
done
mv "$TMP" "$OUT"
trap - EXIT
echo "wrote $OUT" >&2
exit $failed
