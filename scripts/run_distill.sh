#!/usr/bin/env bash
# Sequence-level distillation on Multi30K EN->DE: the recipe's model teaches the student shapes
# (configs/student-deep-shallow.yaml starts from the teacher's weights, configs/student-small.yaml from
# random ones); each shape is also trained on the original data for the same time, so the effect of
# distillation is measured, not assumed. Every student is tuned on validation (mtrain tune), exported to
# int8 CTranslate2 and scored on validation; after the trainings every model is timed on test 2016,
# one after the other, with 2 threads, beam 4 and greedy, decoding only (scripts/time_decode.py: load
# and start-up excluded, best of three), and scored once on test (the int8 beam-4 output:
# test.ct2-int8-beam4.de beside each checkpoint). Prints a Markdown table and writes it to runs/distill.md.
# Usage: bash scripts/run_distill.sh [teacher checkpoint] [extra --set overrides for every training...]
#   bash scripts/run_multi30k.sh configs/multi30k.yaml     # first: the teacher (runs/multi30k-en-de)
#   bash scripts/run_distill.sh runs/multi30k-en-de/checkpoint_avg.pt --set train.precision=fp32
set -euo pipefail
teacher=${1:-runs/multi30k-en-de/checkpoint_avg.pt}
shift || true
overrides=("$@")
test_src=${DATA:-data}/multi30k/test_2016_flickr.en.gz
test_ref=${DATA:-data}/multi30k/test_2016_flickr.de.gz
valid_src=${DATA:-data}/multi30k/val.en.gz
valid_ref=${DATA:-data}/multi30k/val.de.gz
models=()

measure() {  # name checkpoint [tune]: (tune,) export int8, score on validation; timed later, with the others
  local name=$1 ckpt=$2 dir out=ct2-int8 valid
  dir=$(dirname "$ckpt")
  if [ "${3:-}" = tune ]; then  # the teacher is already tuned by its recipe, and its file stays as it is
    mtrain tune --checkpoint "$ckpt" --beam 4 --lenpen 0.4:2.0:0.2 --write > "$dir/tune.txt"
  fi
  mtrain export --checkpoint "$ckpt" --format ctranslate2 --quantization int8 --output "$dir/$out" --force > /dev/null
  python scripts/time_decode.py "$dir/$out" "$valid_src" "$dir/valid.$out.de" --repeats 1 > /dev/null
  valid=$(mtrain eval-bleu --hyp "$dir/valid.$out.de" --ref "$valid_ref" --json | python -c "import json,sys; print(f\"{json.load(sys.stdin)['bleu']:.2f}\")")
  models+=("$name|$dir|$valid")
}

sent_per_s() { python -c "import json,sys; print(json.load(sys.stdin)['sentences_per_s'])"; }

measure teacher "$teacher"
for shape in ${SHAPES:-small deep-shallow}; do  # SHAPES="deep-shallow" measures one shape
  mtrain distill --config "configs/student-$shape.yaml" --teacher "$teacher" --no-export \
    --set "out_dir=runs/student-$shape-distilled" "${overrides[@]}"
  measure "student-$shape, distilled" "runs/student-$shape-distilled/checkpoint_avg.pt" tune
  mtrain train --config "configs/student-$shape.yaml" --set "out_dir=runs/student-$shape-original" "${overrides[@]}"
  measure "student-$shape, original data" "runs/student-$shape-original/checkpoint_avg.pt" tune
done
# every model timed in one stretch, one after the other (the host's speed drifts over the hours the
# trainings take), decoding only; the beam-4 output is scored once on test
rows=()
for entry in "${models[@]}"; do
  IFS='|' read -r name dir valid <<< "$entry"
  beam4=$(python scripts/time_decode.py "$dir/ct2-int8" "$test_src" "$dir/test.ct2-int8-beam4.de" --beam 4 --repeats 3 | sent_per_s)
  greedy=$(python scripts/time_decode.py "$dir/ct2-int8" "$test_src" "$dir/test.ct2-int8-greedy.de" --beam 1 --repeats 3 | sent_per_s)
  scores=$(mtrain eval-bleu --hyp "$dir/test.ct2-int8-beam4.de" --ref "$test_ref" --json | python -c "import json,sys; r=json.load(sys.stdin); print(f\"{r['bleu']:.2f} {r['chrf']:.2f}\")")
  size=$(du -sm "$dir/ct2-int8" | cut -f1)
  minutes=$(python -c "import json; r=[json.loads(l) for l in open('$dir/metrics.jsonl')]; print(round(max(x.get('elapsed_s', 0) for x in r) / 60, 1))")
  rows+=("| $name | $valid | ${scores% *} | ${scores#* } | $beam4 | $greedy | $size MB | $minutes min |")
done
echo "| model | valid BLEU | test BLEU | chrF | CT2 int8 sent/s, beam 4 | greedy | size | training |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}" | tee runs/distill.md
