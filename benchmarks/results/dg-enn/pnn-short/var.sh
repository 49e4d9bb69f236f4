#!/usr/bin/env bash
# DG-PNN variant runner of docs/dg-enn-pnn-short.md (a copy of the script used; it writes to /tmp/s5_pnn and
# scores against the base pnn runs of run.sh in /tmp/s4/runs). Data parameters: exactly those of
# ../synthetic-communities/run.sh for each SETTING.
# usage: var.sh SETTING VARIANT [KEY=VALUE ...]   (embedding.params.KEY=VALUE for dg-pnn)
set -euo pipefail
cd /work/main
export PYTHONPATH=src
S=$1; V=$2; shift 2
COMMON='n_items: 4000, n_categories: 20, n_cities: 500, n_brands: 500, emit_true_prob: false, attr_zipf: 1.5, popularity_exponent: 1.5, short_frac: 0.5, short_len: 3, short_weight: 0.0'
SIZE='n_instances: 60000, n_users: 3000'
case $S in
  act01)   X=', short_activity: 0.1' ;;
  sa01-d1) X=', n_communities: 30, short_activity: 0.1, seed: 1' ;;
  planted-d1) X=', n_communities: 30, short_activity: 0.2, seed: 1' ;;
  sa01)    X=', n_communities: 30, short_activity: 0.1' ;;
  planted) X=', n_communities: 30, short_activity: 0.2' ;;
  act)     X=', short_activity: 0.2' ;;
  act-d1)  X=', short_activity: 0.2, seed: 1' ;;
  act-d2)  X=', short_activity: 0.2, seed: 2' ;;
  planted-d2) X=', n_communities: 30, short_activity: 0.2, seed: 2' ;;
  pur07)   X=', n_communities: 30, short_activity: 0.2, community_purity: 0.7' ;;
  *) echo "unknown $S" >&2; exit 2;;
esac
SETS=()
for kv in "$@"; do case $kv in train.*) SETS+=(--set "$kv");; *) SETS+=(--set "embedding.params.$kv");; esac; done
D=/tmp/s5_pnn/$S/$V
N="measured on the shared 2-core machine while other jobs ran"
t0=$(date +%s)
python -m ctrgraph compare --dataset synthetic --models dg-pnn --seeds 1,2,3 \
  --set train.progress=false --set train.num_threads=1 --set "data.params={$SIZE, $COMMON$X}" "${SETS[@]}" --out "$D"
echo "train_s $(( $(date +%s) - t0 ))"
python -m ctrgraph dg-analysis fig6 --base-runs "/tmp/s4/runs/$S/runs/pnn-seed*" --dg-runs "$D/runs/dg-pnn-seed*" \
  --by hist --edges 4 --out "$D/fig6-pooled" --note "$N"
L=/tmp/s5_pnn/$S-$V/runs; mkdir -p $L
for k in 1 2 3; do ln -sfn /tmp/s4/runs/$S/runs/pnn-seed$k $L/pnn-seed$k; ln -sfn $D/runs/dg-pnn-seed$k $L/dg-pnn-seed$k; done
python benchmarks/results/dg-enn/synthetic-communities/bootstrap.py /tmp/s5_pnn/$S-$V pnn --B 300 --out /tmp/s5_pnn/bootstrap.jsonl
echo "total_s $(( $(date +%s) - t0 ))"
