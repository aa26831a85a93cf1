#!/usr/bin/env bash
# Back-translation on Multi30K, end to end (Sennrich et al. 2016; sampling as in Edunov et al.
# 2018; tagged as in Caswell et al. 2019):
#   1. split Multi30K train: the first PARALLEL pairs stay parallel, the German side of the rest
#      plays monolingual text (its English is thrown away);
#   2. train EN->DE on the parallel pairs alone (the baseline) and DE->EN on the same pairs
#      (the reverse model);
#   3. back-translate the German "monolingual" text into synthetic English with the reverse
#      model, drawing each token from its 10 most probable (mtrain translate --sampling topk);
#   4. train EN->DE on the parallel pairs plus the synthetic pairs, tagged <BT> on the source
#      side, each half of every epoch (weights 1 and 1: the parallel pairs are upsampled);
#   5. tune each EN->DE model's length penalty on the validation set (beam 4), score both once on
#      test 2016 and print one JSON line.
# Usage: bash scripts/run_backtranslation.sh [work dir] [extra --set overrides for all trainings]
#   STEPS (default 800), PARALLEL (default 10000) and THREADS (default 2) from the environment.
set -euo pipefail
work=${1:-runs/backtranslation}
shift || true
steps=${STEPS:-800}
parallel=${PARALLEL:-10000}
threads=${THREADS:-2}
data=${DATA:-data}/multi30k
mkdir -p "$work/text"
zcat "$data/train.en.gz" | sed -n "1,${parallel}p" >"$work/text/parallel.en"
zcat "$data/train.de.gz" | sed -n "1,${parallel}p" >"$work/text/parallel.de"
zcat "$data/train.de.gz" | tail -n +"$((parallel + 1))" >"$work/text/mono.de"

common=(--config configs/multi30k.yaml --set train.max_steps="$steps" --set train.valid_every=200
  --set train.save_every=100 --set train.threads="$threads" "$@")
train() { # out_dir, extra overrides...
  local out=$1
  shift
  local start=$(date +%s)
  mtrain train "${common[@]}" --set out_dir="$out" "$@"
  echo "$(($(date +%s) - start))" >"$out/train_seconds"
}
score() { # run dir -> BLEU JSON of its averaged checkpoint on test 2016: beam 4, length penalty tuned on valid
  mtrain tune --checkpoint "$1/checkpoint_avg.pt" --beam 4 --lenpen 0.4:2.0:0.2 --write --threads "$threads" \
    | tee "$1/tune.txt"
  mtrain translate --checkpoint "$1/checkpoint_avg.pt" --input "$1/data/test.en.txt" --output "$1/test.hyp.de" \
    --threads "$threads"
  mtrain eval-bleu --hyp "$1/test.hyp.de" --ref "$1/data/test.de.txt" --json >"$1/test.bleu.json"
}

train "$work/baseline" --set data.train.path="$work/text/parallel"
score "$work/baseline"
train "$work/reverse" --set data.train.path="$work/text/parallel" --set data.src_lang=de --set data.tgt_lang=en

start=$(date +%s)
mtrain translate --checkpoint "$work/reverse/checkpoint_avg.pt" --input "$work/text/mono.de" \
  --output "$work/text/bt.en" --sampling topk --topk 10 --seed 1 --threads "$threads"
echo "$(($(date +%s) - start))" >"$work/text/bt_seconds"
cp "$work/text/mono.de" "$work/text/bt.de"

train "$work/bt" --set "data.train=[{path: $work/text/parallel, weight: 1}, {path: $work/text/bt, weight: 1, tag: <BT>}]"
score "$work/bt"

python - "$work" "$parallel" "$steps" <<'PY'
import json, sys
from pathlib import Path
work, parallel, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bleu = lambda run: json.loads((work / run / "test.bleu.json").read_text())
mono = sum(1 for _ in open(work / "text/mono.de", encoding="utf-8"))
print(json.dumps({
    "recipe": "backtranslation", "parallel_pairs": parallel, "monolingual_sentences": mono, "steps": steps,
    "baseline": {k: bleu("baseline")[k] for k in ("bleu", "chrf", "brevity_penalty")},
    "backtranslation": {k: bleu("bt")[k] for k in ("bleu", "chrf", "brevity_penalty")},
    "back_translate_seconds": int((work / "text/bt_seconds").read_text()),
    "train_seconds": {r: int((work / r / "train_seconds").read_text()) for r in ("baseline", "reverse", "bt")},
}))
PY
