#!/usr/bin/env bash
# One multilingual Multi30K model (EN->DE+FR+CS, configs/multi30k-multilingual.yaml, 57 minutes)
# beside three bilingual ones of the EN->DE recipe trained a third of that time each (19 minutes:
# the same total compute), test 2016 decoded once per direction with beam 4 and length penalty 0.6
# for all, sacreBLEU and the off-target rate (CLD2) per direction. Training budgets: 114 minutes.
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
score() {  # checkpoint, target language, source file, reference file, output prefix, [--tgt-lang]
  mtrain translate --checkpoint "$1" --input "$3" --output "$5.hyp.$2" --beam 4 --lenpen 0.6 "${@:6}"
  mtrain eval-bleu --hyp "$5.hyp.$2" --ref "$4" --json > "$5.bleu.$2.json"
  python scripts/eval_off_target.py --hyp "$5.hyp.$2" --ref "$4" --lang "$2" > "$5.off-target.$2.json"
  echo "$5 $2: $(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["bleu"])' "$5.bleu.$2.json") BLEU," \
    "$(cat "$5.off-target.$2.json")"
}
for tgt in de fr cs; do
  score "$multi/checkpoint_avg.pt" $tgt "$multi/data/test.en-$tgt.en.txt" "$multi/data/test.en-$tgt.$tgt.txt" \
    "$multi/test" --tgt-lang $tgt
  bilingual=runs/multi30k-en-$tgt-19min
  score "$bilingual/checkpoint_avg.pt" $tgt "$bilingual/data/test.en.txt" "$bilingual/data/test.$tgt.txt" "$bilingual/test"
done
