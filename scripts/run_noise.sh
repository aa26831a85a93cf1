#!/usr/bin/env bash
# The data.filters experiment: Multi30K EN->DE with 20% known noise (scripts/make_noisy.py: French or
# English on the German side, source copies, misaligned pairs, junk). First the filters' precision and
# recall against the known noise (scripts/filter_scores.py), then three trainings of the Multi30K
# recipe for the same time: the clean data, the noisy data, the noisy data with every filter on.
# Each is scored once on test 2016 (beam 4, length penalty 0.6). Prints a Markdown table.
# Usage: MINUTES=15 bash scripts/run_noise.sh [extra --set overrides for every training...]
set -euo pipefail
minutes=${MINUTES:-57}
overrides=("$@")
filters='data.filters={langid: true, copy: true, control_chars: true, min_letters: 0.5, max_other_script: 0.1, max_token_chars: 40, numbers: true}'
python scripts/make_noisy.py --multi30k ${DATA:-data}/multi30k --out runs/noise-data/train
python scripts/filter_scores.py --config configs/multi30k.yaml --corpus runs/noise-data/train --set "$filters" \
  | tee runs/noise-data/filter-scores.md
rows=()
for variant in clean noisy filtered; do
  run=runs/noise-$variant
  data=()
  [ "$variant" != clean ] && data=(--set "data.train.path=runs/noise-data/train")
  [ "$variant" = filtered ] && data+=(--set "$filters")
  mtrain train -c configs/multi30k.yaml --set "out_dir=$run" --set "train.max_minutes=$minutes" "${data[@]}" "${overrides[@]}"
  mtrain translate --checkpoint "$run/checkpoint_avg.pt" --beam 4 --lenpen 0.6 -i "$run/data/test.en.txt" -o "$run/test.hyp.de"
  scores=$(mtrain eval-bleu --hyp "$run/test.hyp.de" --ref "$run/data/test.de.txt" --json \
    | python -c "import json,sys; r=json.load(sys.stdin); print(f\"{r['bleu']:.2f} | {r['chrf']:.2f}\")")
  kept=$(python -c "import json; m=json.load(open('$run/data/manifest.json')); print(m['clean']['kept'])")
  steps=$(python -c "import json; r=[json.loads(l) for l in open('$run/metrics.jsonl')]; print(max(x['step'] for x in r))")
  rows+=("| $variant | $kept | $steps | $scores |")
done
echo
echo "| training data | pairs kept | steps in $minutes min | test 2016 BLEU | chrF |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
