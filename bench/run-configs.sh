#!/usr/bin/env bash
# Run benchmark studies one after the other and log each run's output and wall time.
#   bash bench/run-configs.sh "sst2-fixed.toml --trials 1 --pruner none" "sst2.toml --trials 20"
# Logs go to bench/results/<config>.log; the studies to bench/results/studies/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p bench/results
for run in "$@"; do
  config=${run%% *}
  args=${run#"$config"}
  log="bench/results/${config%.toml}.log"
  echo "== tuner search --config bench/$config$args" | tee "$log"
  start=$(date +%s)
  # shellcheck disable=SC2086
  .venv/bin/tuner search --config "bench/$config" $args --quiet >>"$log" 2>&1
  echo "wall_seconds=$(( $(date +%s) - start ))" | tee -a "$log"
done
