#!/usr/bin/env bash
# The scoring stage of scripts/run_multilingual.sh, on its four trained models: for each direction
# (EN->DE, FR, CS) and each model (the multilingual one, the direction's bilingual one), the length
# penalty that `mtrain tune` (robust rule, beam 4) chooses on that direction's validation set, then
# test 2016 decoded once with it, sacreBLEU, and the off-target rate (CLD2).
# Usage: bash scripts/score_multilingual.sh      (in the directory that holds runs/)
set -euo pipefail
multi=runs/multi30k-multilingual
score() {  # checkpoint, target language, run directory's data prefix, output prefix, [--tgt-lang L]
  local data=$3 out=$4 lenpen
  mtrain tune --checkpoint "$1" --beam 4 --lenpen 0.4:2.0:0.2 "${@:5}" | tee "$out.tune.$2.txt"
  lenpen=$(sed -n 's/^chosen: beam [0-9]*, lenpen \([0-9.]*\) .*/\1/p' "$out.tune.$2.txt")
  mtrain translate --checkpoint "$1" --input "$data.en.txt" --output "$out.hyp.$2" --beam 4 --lenpen "$lenpen" "${@:5}"
  mtrain eval-bleu --hyp "$out.hyp.$2" --ref "$data.$2.txt" --json > "$out.bleu.$2.json"
  python scripts/eval_off_target.py --hyp "$out.hyp.$2" --ref "$data.$2.txt" --lang "$2" > "$out.off-target.$2.json"
  echo "$out $2 (lenpen $lenpen): $(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["bleu"])' \
    "$out.bleu.$2.json") BLEU, $(cat "$out.off-target.$2.json")"
}
for tgt in de fr cs; do
  score "$multi/checkpoint_avg.pt" $tgt "$multi/data/test.en-$tgt" "$multi/test" --tgt-lang $tgt
  bilingual=runs/multi30k-en-$tgt-19min
  score "$bilingual/checkpoint_avg.pt" $tgt "$bilingual/data/test" "$bilingual/test"
done
