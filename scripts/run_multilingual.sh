#!/usr/bin/env bash
# One multilingual Multi30K model (EN->DE+FR+CS, configs/multi30k-multilingual.yaml, 57 minutes)
# beside three bilingual ones of the EN->DE recipe trained a third of that time each (19 minutes:
# the same total compute), then scripts/score_multilingual.sh: per model and direction the length
# penalty tuned on the validation set, test 2016 decoded once with it at beam 4, sacreBLEU and the
# off-target rate (CLD2). Training budgets: 114 minutes.
# Run it alone on the machine: the budgets are wall-clock minutes.
# Usage: bash scripts/run_multilingual.sh [data prefix directory, default data/multi30k]
set -euo pipefail
data=${1:-data/multi30k}
multi=runs/multi30k-multilingual
paths=(--set "data.train.0.path=$data/train" --set "data.train.1.path=$data/train" --set "data.train.2.path=$data/train"
       --set "data.valid.path=$data/val" --set "data.test.path=$data/test_2016_flickr")
mtrain train --config configs/multi30k-multilingual.yaml "${paths[@]}"
for tgt in de fr cs; do
  mtrain train --config configs/multi30k.yaml --set data.tgt_lang=$tgt --set out_dir=runs/multi30k-en-$tgt-19min \
    --set train.max_minutes=19 --set train.max_steps=10000 --set "data.train.path=$data/train" \
    --set "data.valid.path=$data/val" --set "data.test.path=$data/test_2016_flickr"
done
bash scripts/score_multilingual.sh
