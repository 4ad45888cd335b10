#!/usr/bin/env bash
# Trains and evaluates the rows of the Fashion-MNIST results table (docs/results.md), then
# renders it (`mpcvit table`). Every step resumes: training by epoch, the
# secure evaluation by image (its journal), and a finished step is skipped, so
# an interrupted run is simply started again. Hours of work on a 2-core
# machine: run it in the background, e.g.
#
#   nohup scripts/results-table.sh > runs/table.out 2>&1 &
#   scripts/results-table.sh mu0.1-kd mu0.3    # only these rows
#
# The default RUNS, bench/table, is in the repository: what a row leaves there
# that the table or a later row needs (report, training log, secure journal,
# exported model, the shared teacher and search checkpoints) is committed, so
# that work survives the machine it ran on; bench/table/.gitignore leaves out
# the per-epoch checkpoints and each row's copies of the shared ones.
#
# Rows (sub-directories of RUNS): teacher, scale-kd, rsattn-kd, mu0.1 ...
# mu0.7 (no KD) and mu0.1-kd ... mu0.7-kd. Every student starts from the one
# teacher (copied into its directory) and every mu row from the one search
# (copied from the first mu row that finished it): the rows differ only in
# what the table compares. Run `teacher` and `mu0.5-kd` first.
#
# Environment: RUNS (default bench/table), EPOCHS_TEACHER (40), EPOCHS_SEARCH
# (2), EPOCHS_RETRAIN (24), SECURE (secure images per row, 1000), SEED (1),
# RAYON_NUM_THREADS (1: two rows in two processes use the 2 cores better than
# one row with two threads); TRAIN_ARGS and EVAL_ARGS are added to every
# `mpcvit train` and `mpcvit eval` (CI's smoke run: a tiny model, few images);
# MPCVIT names a binary built with `--features train` to use instead of
# building one (so that builds in the tree do not swap it under a long run).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-bench/table}
SECURE=${SECURE:-1000}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
common=(--epochs-teacher "${EPOCHS_TEACHER:-40}" --epochs-search "${EPOCHS_SEARCH:-2}"
  --epochs-retrain "${EPOCHS_RETRAIN:-24}" --seed "${SEED:-1}")
read -r -a train_extra <<< "${TRAIN_ARGS:-}"
read -r -a eval_extra <<< "${EVAL_ARGS:-}"
all=(teacher mu0.5-kd scale-kd rsattn-kd mu0.5 mu0.1-kd mu0.3-kd mu0.7-kd mu0.1 mu0.3 mu0.7)
rows=("$@")
[ "${#rows[@]}" -gt 0 ] || rows=("${all[@]}")

if [ -n "${MPCVIT:-}" ]; then
  bin=$MPCVIT
else
  cargo build -q --release -p mpcvit --features train
  bin=target/release/mpcvit
fi
mkdir -p "$RUNS"

train_row() {
  local row=$1 dir="$RUNS/$1"
  local args=()
  case "$row" in
    teacher) args=(--teacher-only) ;;
    scale-kd) args=(--uniform scale) ;;
    rsattn-kd) args=(--uniform rsattn) ;;
    mu*-kd) local mu=${row#mu} && args=(--mu "${mu%-kd}") ;;
    mu*) args=(--mu "${row#mu}" --no-kd) ;;
    *) echo "unknown row $row (rows: ${all[*]})" >&2 && return 2 ;;
  esac
  mkdir -p "$dir"
  if [ "$row" != teacher ]; then
    if [ ! -e "$RUNS/teacher/teacher.bpk" ]; then
      echo "[$row] needs the teacher: run the teacher row first" >&2
      return 1
    fi
    cp -n "$RUNS/teacher/teacher.bpk" "$dir/"
    case "$row" in mu*) [ -e "$RUNS/search.bpk" ] && cp -n "$RUNS/search.bpk" "$dir/" ;; esac
  fi
  if [ ! -e "$dir/model.mpcvit" ]; then
    echo "[$row] training: $bin train --out $dir ${common[*]} ${args[*]} ${train_extra[*]}"
    "$bin" train --out "$dir" "${common[@]}" "${args[@]}" "${train_extra[@]}"
  fi
  case "$row" in mu*) [ -e "$RUNS/search.bpk" ] || cp "$dir/search.bpk" "$RUNS/search.bpk" ;; esac
}

# the computation version of this tree (`session::COMPUTATION`): a report of
# another ran another computation
proto=$(sed -n 's/^pub const COMPUTATION: u8 = \([0-9]*\);$/\1/p' core/src/session.rs)

eval_row() {
  local dir="$RUNS/$1"
  if [ -e "$dir/eval.json" ] && grep -q "\"secure_images\": $SECURE," "$dir/eval.json" \
    && grep -q '"secure_spread": true' "$dir/eval.json" && grep -q "\"version\": $proto," "$dir/eval.json"; then
    return 0
  fi
  echo "[$1] evaluating: $SECURE secure images"
  "$bin" eval --model "$dir/model.mpcvit" --secure "$SECURE" --journal "$dir/secure.jsonl" --json "$dir/eval.json" \
    "${eval_extra[@]}"
}

for row in "${rows[@]}"; do
  train_row "$row"
  eval_row "$row"
done
"$bin" table --runs "$RUNS" --out "$RUNS/table.md"
