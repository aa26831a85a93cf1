#!/usr/bin/env bash
# Domain fine-tuning with train.init_from: the Multi30K EN->DE recipe's model (scripts/run_multi30k.sh)
# adapted to news. WMT newstest2013 is split into 2500 training and 500 validation pairs, newstest2014
# is the test set. Two runs of the same length: plain fine-tuning (news only) and mixed fine-tuning
# (news upsampled 4x beside the original Multi30K data, which limits forgetting). Every model, the
# source included, is scored on newstest2014 (in-domain) and on Multi30K test 2016 (forgetting) with
# the same decoding: int8 CTranslate2, beam 4, length penalty 0.6. Prints a Markdown table.
# Usage: bash scripts/run_finetune.sh [source checkpoint] [extra --set overrides for both runs...]
# Data: $DATA/multi30k (mtrain data get multi30k; DATA defaults to data) and $DATA/wmt14/newstest2013.{en,de},
# newstest2014.{en,de} (e.g. sacrebleu -t wmt13 -l en-de --echo src > data/wmt14/newstest2013.en, and ref, wmt14).
set -euo pipefail
source_ckpt=${1:-runs/multi30k-en-de/checkpoint_avg.pt}
shift || true
overrides=("$@")
wmt=${DATA:-data}/wmt14
m30k=${DATA:-data}/multi30k
data=runs/finetune-data
mkdir -p "$data"
for lang in en de; do
  head -n 2500 "$wmt/newstest2013.$lang" > "$data/nt13-train.$lang"
  tail -n 500 "$wmt/newstest2013.$lang" > "$data/nt13-valid.$lang"
  cp "$wmt/newstest2014.$lang" "$data/nt14.$lang"
  zcat "$m30k/test_2016_flickr.$lang.gz" > "$data/m30k-test.$lang"
done
rows=()

score() {  # name checkpoint: decode both test sets with int8 CTranslate2, one table row
  local name=$1 ckpt=$2 dir row
  dir=$(dirname "$ckpt")/finetune-eval
  mkdir -p "$dir"
  row="| $name |"
  for test in nt14 m30k-test; do
    mtrain translate --checkpoint "$ckpt" --engine ctranslate2 --quantization int8 --beam 4 --lenpen 0.6 \
      --threads 2 -i "$data/$test.en" -o "$dir/$test.de"
    row+=$(mtrain eval-bleu --hyp "$dir/$test.de" --ref "$data/$test.de" --json \
      | python -c "import json,sys; r=json.load(sys.stdin); print(f\" {r['bleu']:.2f} | {r['chrf']:.2f} |\", end='')")
  done
  rows+=("$row")
}

minutes() {  # training wall-clock of a run, from its metrics
  python -c "import json; r=[json.loads(l) for l in open('$1/metrics.jsonl')]; print(round(max(x.get('elapsed_s', 0) for x in r) / 60, 1))"
}

score "source model (Multi30K)" "$source_ckpt"
start=$(date +%s)
mtrain train -c configs/finetune-news.yaml --set "train.init_from=$source_ckpt" "${overrides[@]}"
score "plain fine-tuning (news only), $(minutes runs/finetune-news) min" runs/finetune-news/checkpoint_best.pt
mtrain train -c configs/finetune-news.yaml --set "train.init_from=$source_ckpt" --set out_dir=runs/finetune-news-mixed \
  --set "data.train=[{path: runs/finetune-data/nt13-train, weight: 4}, {path: $m30k/train}]" \
  "${overrides[@]}"
score "mixed fine-tuning (news 4x + Multi30K), $(minutes runs/finetune-news-mixed) min" runs/finetune-news-mixed/checkpoint_best.pt
end=$(date +%s)
echo "fine-tuning and scoring wall-clock: $(( (end - start) / 60 )) min"
echo
echo "| model | newstest2014 BLEU | chrF | Multi30K test 2016 BLEU | chrF |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
