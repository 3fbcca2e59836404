#!/usr/bin/env bash
# The whole distill loop on the embedded default, on a CPU (run scripts/setup.sh first):
#   synthesize with TOA on GSM8K-style training prompts that carry gold answers
#   -> export SFT -> train SmolLM2-135M-Instruct for a few dozen steps on the CPU
#   -> serve base and trained checkpoints with the CPU vLLM build -> evaluate both on a
#   held-out sample -> a table and a last line "distill demo: <metric> before X -> after Y".
# A 135M model shows the plumbing, not the papers' gains.
#
# Knobs (environment): DEMO_DIR (runs/distill-demo), TRAIN_PROMPTS (24), BUDGET (4),
# STEPS (20), EVAL_ITEMS (40), MAX_TOKENS (256), PYTHON (.venv/bin/python).
# Rerunning with the same DEMO_DIR resumes synthesis and evaluation; training reruns.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
DIR=${DEMO_DIR:-runs/distill-demo}
TRAIN_PROMPTS=${TRAIN_PROMPTS:-24}
BUDGET=${BUDGET:-4}
STEPS=${STEPS:-20}
EVAL_ITEMS=${EVAL_ITEMS:-40}
MAX_TOKENS=${MAX_TOKENS:-256}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$DIR"
t_start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - t_start )) s] $*"; }

step "prepare the embedded model (cached after setup)"
BASE=$("$PY" - <<'EOF'
from toa_graph.embedded import prepare
print(prepare(["smollm2-135m-instruct"]).models["smollm2-135m-instruct"])
EOF
)
echo "base model: $BASE"

step "training prompts: the first $TRAIN_PROMPTS shipped GSM8K items (gold answers kept)"
"$PY" - "$DIR/train_prompts.jsonl" "$TRAIN_PROMPTS" <<'EOF'
import json, sys
from toa_graph.evaluation import builtin_rows, make_items
rows = builtin_rows("gsm8k")[: int(sys.argv[2])]
items = make_items(rows, "gsm8k", {"prompt": "question", "gold": "answer"})
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for it in items:  # the prompt carries the same answer instruction as the evaluation
        f.write(json.dumps({"id": it.id, "prompt": it.prompt, "answer": it.gold}) + "\n")
EOF

step "synthesize with TOA (budget $BUDGET per prompt) on the embedded stack"
"$PY" -m toa_graph.cli synthesize --method toa --config embedded \
  --input "$DIR/train_prompts.jsonl" --output "$DIR/synth" --budget "$BUDGET" \
  --set max_tokens="$MAX_TOKENS" --concurrency 8 --no-progress

step "export SFT data (the best response per prompt)"
"$PY" -m toa_graph.cli export sft --input "$DIR/synth" --output "$DIR/sft.jsonl"

step "train SmolLM2-135M-Instruct: $STEPS SFT steps on the CPU"
"$PY" -m toa_graph.cli train sft --recipe model_configs/train/demo-cpu-sft.yaml \
  --data "$DIR/sft.jsonl" --model "$BASE" --output "$DIR/ckpt-sft" --steps "$STEPS"

# held out: the last EVAL_ITEMS of the 100 shipped items, never the training prompts
SKIP=$(( 100 - EVAL_ITEMS ))
if (( SKIP < TRAIN_PROMPTS )); then echo "EVAL_ITEMS overlaps the training prompts" >&2; exit 2; fi
for who in base sft; do
  ckpt=$BASE; [[ $who == sft ]] && ckpt=$DIR/ckpt-sft
  step "evaluate $who on $EVAL_ITEMS held-out GSM8K items (served with the CPU vLLM build)"
  "$PY" -m toa_graph.cli evaluate --task gsm8k --checkpoint "$ckpt" --device cpu \
    --model "demo-$who" --label "$who" --output "$DIR/eval-$who" --skip "$SKIP" \
    --limit "$EVAL_ITEMS" --max-tokens "$MAX_TOKENS" --concurrency 8 --no-progress
done

step "result"
"$PY" - "$DIR" "$(( $(date +%s) - t_start ))" <<'EOF'
import json, sys
from pathlib import Path
from toa_graph.evaluation import format_table
d = Path(sys.argv[1])
base, sft = (json.loads((d / f"eval-{w}" / "summary.json").read_text()) for w in ("base", "sft"))
print(format_table([base, sft]))
print(f"loss plot: {d / 'ckpt-sft' / 'loss.png'}; total {sys.argv[2]} s")
print(f"distill demo: gsm8k accuracy before {base['score']:.3f} -> after {sft['score']:.3f}")
EOF
