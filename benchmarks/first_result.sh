#!/usr/bin/env bash
# Time to the first result as a newcomer meets it: fresh clone, fresh virtual environment, the README's command 1
# with an empty cache. Prints one line of timings (seconds) and the run's result line.
#
#   bash benchmarks/first_result.sh [REPO] [WORKDIR]     (defaults: this checkout, a new temporary folder)
#
# Start another job first to measure a loaded machine. Needs network access to the package index (pip install).
set -euo pipefail
repo=${1:-$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)}
work=${2:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
t0=$(date +%s.%N)
git clone -q "$repo" clone
cd clone
python -m venv .venv
. .venv/bin/activate
python -m pip install -q -e ".[dev]" > "$work/install.log" 2>&1
t1=$(date +%s.%N)
export VLBENCH_CACHE="$work/cache"
vlbench run --model pixelbert --task vqa --run-dir results/pixelbert-vqa > "$work/run.out" 2> "$work/run.err"
t2=$(date +%s.%N)
echo "install_s=$(echo "$t1 - $t0" | bc) run_s=$(echo "$t2 - $t1" | bc) total_s=$(echo "$t2 - $t0" | bc)" \
     "loadavg=$(cut -d' ' -f1-3 /proc/loadavg) threads=$(python -c 'import json; e = json.load(open("results/pixelbert-vqa/run.json"))["env"]; print(e["torch_threads"], "-", e["threads_chosen_by"])')"
cat "$work/run.out"
