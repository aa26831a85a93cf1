#!/usr/bin/env bash
# End-to-end smoke test of the CLI on the built-in demo corpus with a tiny budget:
# prepare, train, average, translate, eval-bleu, export, and the GPU check's dry run. Fails loudly at the
# first failing step.
# Usage: bash scripts/smoke.sh [work_dir]
set -euo pipefail
work=${1:-$(mktemp -d)}
run="$work/run"
common=(--config configs/demo.yaml --set "out_dir=$run" --set data.train.demo=5000 --set data.valid.demo=100
        --set data.test.demo=100 --set tokenizer.vocab_size=200 --set model.d_model=64 --set model.d_ff=128)
echo "== smoke: prepare"; mtrain prepare "${common[@]}"
echo "== smoke: train";   mtrain train "${common[@]}" --set train.max_steps=60 --set train.save_every=20 --set train.valid_every=30 --set train.log_every=20
echo "== smoke: average"; mtrain average "$run" --last 2 --output "$run/avg2.pt"
echo "== smoke: translate (file)"
mtrain translate --checkpoint "$run/avg2.pt" --input "$run/data/test.en.txt" --output "$work/hyp.de" --beam 4
[ "$(wc -l < "$work/hyp.de")" -eq 100 ] || { echo "smoke: expected 100 output lines"; exit 1; }
echo "== smoke: translate (stdin)"
printf 'The dog sees a cat.\n\nA man buys two apples.\n' | mtrain translate --checkpoint "$run/avg2.pt" > "$work/stdin.de"
[ "$(wc -l < "$work/stdin.de")" -eq 3 ] || { echo "smoke: expected 3 output lines from stdin"; exit 1; }
echo "== smoke: eval-bleu"
mtrain eval-bleu --hyp "$work/hyp.de" --ref "$run/data/test.de.txt"
echo "== smoke: export (CTranslate2 int8, Hugging Face) and translate through CTranslate2"
mtrain export --checkpoint "$run/avg2.pt" --format ctranslate2 --output "$work/ct2"
mtrain export --checkpoint "$run/avg2.pt" --format huggingface --output "$work/hf"
echo "The dog sees a cat." | mtrain translate --model "$work/ct2" > "$work/ct2.de"
[ "$(wc -l < "$work/ct2.de")" -eq 1 ] || { echo "smoke: expected 1 line from CTranslate2"; exit 1; }
echo "== smoke: the GPU check rehearsed on the CPU (scripts/gpu_check.sh --dry-run: every stage, tiny)"
PYTHON=${PYTHON:-python} bash scripts/gpu_check.sh --dry-run --out "$work/gpu-check"
echo "== smoke: ok ($work)"
