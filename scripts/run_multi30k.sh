#!/usr/bin/env bash
# The Multi30K recipe from nothing to the BLEU line: prepare, train, average, tune the length penalty
# on the validation set (mtrain tune's robust rule), translate test 2016 once, score (sacreBLEU, and the
# lowercased tokenized BLEU that published Multi30K results use).
# Usage: bash scripts/run_multi30k.sh [config] [extra mtrain --set overrides...]
#   bash scripts/run_multi30k.sh configs/multi30k.yaml                          # EN->DE
#   bash scripts/run_multi30k.sh configs/multi30k.yaml --set data.src_lang=de --set data.tgt_lang=en --set out_dir=runs/multi30k-de-en
#   bash scripts/run_multi30k.sh configs/multi30k-en-fr.yaml                    # EN->FR
set -euo pipefail
config=${1:-configs/multi30k.yaml}
shift || true
overrides=("$@")
out=$(python - "$config" "${overrides[@]}" <<'PY'
import sys
from mtrain.config_io import load_config
args = sys.argv[2:]
c = load_config(sys.argv[1], [a for a in args if a != "--set"])
print(c.out_dir, c.data.src_lang, c.data.tgt_lang, c.data.test.path)
PY
)
read -r run src tgt test <<<"$out"
start=$(date +%s)
mtrain train --config "$config" "${overrides[@]}"
end=$(date +%s)
echo "training wall-clock: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s"
ckpt="$run/checkpoint_avg.pt"   # written by train: the average of the last train.average_last checkpoints
# beam 4 as in the paper; the length penalty that scores best on the validation set becomes the checkpoint's
mtrain tune --checkpoint "$ckpt" --beam 4 --lenpen 0.4:2.0:0.2 --write | tee "$run/tune.txt"
end=$(date +%s)
echo "training + tuning wall-clock: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s"
mtrain translate --checkpoint "$ckpt" --input "$run/data/test.$src.txt" --output "$run/test.hyp.$tgt"
mtrain eval-bleu --hyp "$run/test.hyp.$tgt" --ref "$run/data/test.$tgt.txt" | tee "$run/test.bleu.txt"
mtrain eval-bleu --hyp "$run/test.hyp.$tgt" --ref "$run/data/test.$tgt.txt" --json > "$run/test.bleu.json"
# the anchors' metric beside sacreBLEU: lowercased Moses-tokenized BLEU against the dataset's tokenized
# references (needs sacremoses, which mtrain itself does not install: pip install sacremoses)
tokenized_ref="$(dirname "$test")/tok/$(basename "$test").lc.norm.tok.$tgt.gz"
if [ -f "$tokenized_ref" ]; then
  python scripts/score_tokenized.py --hyp "$run/test.hyp.$tgt" --ref "$tokenized_ref" --lang "$tgt" \
    | tee "$run/test.tokenized-bleu.json" || echo "tokenized BLEU skipped: pip install sacremoses"
fi
