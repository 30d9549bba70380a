#!/usr/bin/env bash
# Multi-seed recipe (PolyPythias-style): the same run with separate seeds for the initialisation and the data order.
#
#   MODE=init bash training/configs/multi_seed.sh DATA_DIR USER   # N init seeds x 1 data order
#   MODE=data bash training/configs/multi_seed.sh DATA_DIR USER   # 1 init x N data orders
#
# `init_seed` seeds build_model (step 0 weights); `data_seed` seeds the sampler (which windows every step sees);
# both default to `seed`. Naming: run folder runs/gpt2-124m-owt-init{I}-data{D}, Hub repo
# USER/gpt2-124m-owt-init{I}-data{D}; inside each repo the usual branches step{N} and `main` (final). Runs sharing
# an init seed share hf/step0 bit for bit (`gpt2-owt verify --repo_id ...` checks each repo's step 0
# against its own init_seed); runs sharing a data seed see the same batch at every step (training/data_order.py).
set -euo pipefail
DATA_DIR=${1:?usage: multi_seed.sh DATA_DIR HUB_USER}
HUB_USER=${2:?usage: multi_seed.sh DATA_DIR HUB_USER}
SEEDS=${SEEDS:-"1 2 3 4 5"}
FIXED=${FIXED:-1337}
CONFIG=${CONFIG:-training/configs/gpt2-124m-owt.yaml}

for s in $SEEDS; do
  if [ "${MODE:-init}" = init ]; then init=$s data=$FIXED; else init=$FIXED data=$s; fi
  name=gpt2-124m-owt-init${init}-data${data}
  accelerate launch -m gpt2_owt.cli train --config "$CONFIG" --data_dir "$DATA_DIR" --output_dir "runs/$name" \
    --init_seed "$init" --data_seed "$data" --resume_from_checkpoint auto
  echo "then: eval, gpt2-owt card --run_dir runs/$name ... --repo_id $HUB_USER/$name," \
       "gpt2-owt upload RELEASE --repo_id $HUB_USER/$name --checkpoints runs/$name/hf"
done
