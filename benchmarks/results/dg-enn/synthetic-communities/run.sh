#!/usr/bin/env bash
# DG-ENN Fig. 6 / Table 6 on synthetic data with planted communities (docs/dg-enn.md,
# "Planted communities: behaviour sparsity"). Usage, from the repository root:
#   bash benchmarks/results/dg-enn/synthetic-communities/run.sh OUTROOT SETTING [SETTING ...]
# SETTING is one of: sw0 act comm planted sa01 pur07 planted-d1 planted-d2 act-d1 act-d2 act01 sa01-d1 planted-big planted-big-d1; each trains pnn,dg-pnn,din,dg-din x seeds 1-3
# (one training process at a time, train.num_threads=1) into OUTROOT/SETTING, then writes
# OUTROOT/SETTING/{fig6-din,fig6-pnn,table6-din,table6-pnn}.
set -euo pipefail
OUT=$1; shift
export PYTHONPATH=src
COMMON='n_items: 4000, n_categories: 20, n_cities: 500, n_brands: 500, emit_true_prob: false, attr_zipf: 1.5, popularity_exponent: 1.5, short_frac: 0.5, short_len: 3, short_weight: 0.0'
N="measured on the shared 2-core machine while other jobs ran"
for S in "$@"; do
  SIZE='n_instances: 60000, n_users: 3000'
  case $S in
    sw0)     X='' ;;                                                   # sparse setting, s term off
    act)     X=', short_activity: 0.2' ;;                              # + few impressions for light users
    comm)    X=', n_communities: 30' ;;                                # + communities
    planted) X=', n_communities: 30, short_activity: 0.2' ;;           # both
    sa01)    X=', n_communities: 30, short_activity: 0.1' ;;           # neighbour: fewer impressions
    pur07)   X=', n_communities: 30, short_activity: 0.2, community_purity: 0.7' ;;  # neighbour: looser communities
    planted-d1) X=', n_communities: 30, short_activity: 0.2, seed: 1' ;;   # planted, another data world
    planted-d2) X=', n_communities: 30, short_activity: 0.2, seed: 2' ;;
    act-d1)  X=', short_activity: 0.2, seed: 1' ;;                   # act in the other data worlds
    act-d2)  X=', short_activity: 0.2, seed: 2' ;;
    act01)   X=', short_activity: 0.1' ;;                             # sa01 without communities
    sa01-d1) X=', n_communities: 30, short_activity: 0.1, seed: 1' ;;
    planted-big-d1) X=', n_communities: 30, short_activity: 0.2, seed: 1'; SIZE='n_instances: 120000, n_users: 6000' ;;
    planted-big) X=', n_communities: 30, short_activity: 0.2'; SIZE='n_instances: 120000, n_users: 6000' ;;  # 2x users and rows
    *) echo "unknown setting $S" >&2; exit 2 ;;
  esac
  D=$OUT/$S
  python -m ctrgraph compare --dataset synthetic --models pnn,dg-pnn,din,dg-din --seeds 1,2,3 \
    --set train.progress=false --set train.num_threads=1 --set "data.params={$SIZE, $COMMON$X}" --out "$D"
  for M in pnn din; do
    python -m ctrgraph dg-analysis fig6 --base-runs "$D/runs/$M-seed*" --dg-runs "$D/runs/dg-$M-seed*" \
      --by hist --edges 1,2,3,4 --out "$D/fig6-$M" --note "$N"
    python -m ctrgraph dg-analysis fig6 --base-runs "$D/runs/$M-seed*" --dg-runs "$D/runs/dg-$M-seed*" \
      --by hist --edges 4 --out "$D/fig6-$M-pooled" --note "$N"
    python -m ctrgraph dg-analysis table6 --base-runs "$D/runs/$M-seed*" --dg-runs "$D/runs/dg-$M-seed*" \
      --fields user_id,item_id,city,brand --out "$D/table6-$M" --note "$N"
  done
done
