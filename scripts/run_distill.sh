#!/usr/bin/env bash
# Sequence-level distillation on Multi30K EN->DE: the recipe's model teaches two student shapes
# (configs/student-small.yaml, configs/student-deep-shallow.yaml); each shape is also trained on the
# original data for the same time, so the effect of distillation is measured, not assumed. Every
# model is tuned on validation (mtrain tune), exported to int8 CTranslate2, timed on test 2016 with
# 2 threads (beam 4 and greedy) and scored once (the int8 output: test.ct2-*.de, beside the recipe's own files). Prints a Markdown table and writes runs/distill.json.
# Usage: bash scripts/run_distill.sh [teacher checkpoint] [extra --set overrides for every training...]
#   bash scripts/run_multi30k.sh configs/multi30k.yaml     # first: the teacher (runs/multi30k-en-de)
#   bash scripts/run_distill.sh runs/multi30k-en-de/checkpoint_avg.pt --set train.precision=fp32
set -euo pipefail
teacher=${1:-runs/multi30k-en-de/checkpoint_avg.pt}
shift || true
overrides=("$@")
test_src=../shared/data/multi30k/test_2016_flickr.en.gz
test_ref=../shared/data/multi30k/test_2016_flickr.de.gz
rows=()

measure() {  # name checkpoint [tune]: (tune,) export int8, time beam 4 and greedy, score once
  local name=$1 ckpt=$2 dir
  dir=$(dirname "$ckpt")
  if [ "${3:-}" = tune ]; then  # the teacher is already tuned by its recipe, and its file stays as it is
    mtrain tune --checkpoint "$ckpt" --beam 4 --lenpen 0.4:2.0:0.2 --write > "$dir/tune.txt"
  fi
  mtrain export --checkpoint "$ckpt" --format ctranslate2 --quantization int8 --output "$dir/ct2-int8" --force > /dev/null
  zcat "$test_src" > "$dir/test.ct2.en"
  local start end beam4 greedy
  start=$(date +%s.%N); mtrain translate --model "$dir/ct2-int8" --threads 2 --beam 4 -i "$dir/test.ct2.en" -o "$dir/test.ct2-beam4.de"; end=$(date +%s.%N)
  beam4=$(python -c "print(round(1000 / ($end - $start), 1))")
  start=$(date +%s.%N); mtrain translate --model "$dir/ct2-int8" --threads 2 --beam 1 -i "$dir/test.ct2.en" -o "$dir/test.ct2-greedy.de"; end=$(date +%s.%N)
  greedy=$(python -c "print(round(1000 / ($end - $start), 1))")
  local scores size minutes
  scores=$(mtrain eval-bleu --hyp "$dir/test.ct2-beam4.de" --ref "$test_ref" --json | python -c "import json,sys; r=json.load(sys.stdin); print(f\"{r['bleu']:.2f} {r['chrf']:.2f}\")")
  size=$(du -sm "$dir/ct2-int8" | cut -f1)
  minutes=$(python -c "import json; r=[json.loads(l) for l in open('$dir/metrics.jsonl')]; print(round(max(x.get('elapsed_s', 0) for x in r) / 60, 1))")
  rows+=("| $name | ${scores% *} | ${scores#* } | $beam4 | $greedy | $size MB | $minutes min |")
}

measure teacher "$teacher"
for shape in ${SHAPES:-small deep-shallow}; do  # SHAPES="deep-shallow" measures one shape
  mtrain distill --config "configs/student-$shape.yaml" --teacher "$teacher" --no-export \
    --set "out_dir=runs/student-$shape-distilled" "${overrides[@]}"
  measure "student-$shape, distilled" "runs/student-$shape-distilled/checkpoint_avg.pt" tune
  mtrain train --config "configs/student-$shape.yaml" --set "out_dir=runs/student-$shape-original" "${overrides[@]}"
  measure "student-$shape, original data" "runs/student-$shape-original/checkpoint_avg.pt" tune
done
echo "| model | test BLEU | chrF | CT2 int8 sent/s, beam 4 | greedy | size | training |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}" | tee runs/distill.md
