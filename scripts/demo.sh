#!/usr/bin/env bash
# The whole release pipeline on the bundled OpenWebText sample, on CPU, in a few minutes (`make demo` runs this).
#
#   prepare (real data pipeline) -> train (tiny preset, accelerate launch, DeepSpeed ZeRO-2, 2 CPU processes)
#   -> evaluate (WikiText-2, LAMBADA) -> release folder + model card -> gpt2-owt upload --dry_run
#
# Every run gets a new folder under $DEMO_ROOT (default runs/demo/<timestamp>): rerunning never clobbers an earlier
# run. The prepared data is made once in $DEMO_ROOT/data and re-verified against its manifest on later runs.
# Smaller/faster settings for tests: DEMO_MAX_STEPS, DEMO_EVAL_LIMIT (documents/examples per eval task).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
ACCELERATE=${ACCELERATE:-$(dirname "$PY")/accelerate}
GPT2OWT=${GPT2OWT:-$(dirname "$PY")/gpt2-owt}
DEMO_ROOT=${DEMO_ROOT:-runs/demo}
DEMO_MAX_STEPS=${DEMO_MAX_STEPS:-200}
DEMO_EVAL_LIMIT=${DEMO_EVAL_LIMIT:-}
DEMO_PORT=${DEMO_PORT:-29517}
DATA="$DEMO_ROOT/data"
OUT="$DEMO_ROOT/$(date -u +%Y%m%d-%H%M%S)"
while [ -e "$OUT" ]; do OUT="$OUT-x"; done
RUN="$OUT/run" RESULTS="$OUT/results.json" RELEASE="$OUT/release"
export DS_ACCELERATOR=cpu TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
mkdir -p "$OUT"

stage() { printf '\n=== %s ===\n' "$*"; }

stage "1/5 prepare the bundled OpenWebText sample -> $DATA"
if [ -f "$DATA/manifest.json" ]; then
  "$GPT2OWT" verify-data --data_dir "$DATA"
else
  "$GPT2OWT" prepare --dataset json \
    --data_files training/sample_data/owt_first37_docs.jsonl training/sample_data/owt20p_lines_sample5001.jsonl \
    --val_fraction 0.05 --num_proc 2 --output_dir "$DATA"
fi

stage "2/5 train the tiny preset: accelerate launch, DeepSpeed ZeRO-2, 2 CPU processes -> $RUN"
"$ACCELERATE" launch --config_file accelerate_configs/cpu_zero2.yaml --num_processes 2 --main_process_port "$DEMO_PORT" \
  -m gpt2_owt.cli train --config training/configs/tiny.yaml \
  --data_dir "$DATA" --output_dir "$RUN" --max_steps "$DEMO_MAX_STEPS" --report_to none

stage "3/5 evaluate WikiText-2 and LAMBADA (lm-evaluation-harness definitions) -> $RESULTS"
"$GPT2OWT" eval --model "$RUN/hf/final" --tasks wikitext,lambada_openai --batch_size 16 \
  --output "$RESULTS" ${DEMO_EVAL_LIMIT:+--limit "$DEMO_EVAL_LIMIT"}

stage "4/5 build the release folder and model card -> $RELEASE"
"$GPT2OWT" card --run_dir "$RUN" --eval_results "$RESULTS" --output_dir "$RELEASE" \
  --repo_id demo-user/gpt2-owt-tiny-demo

stage "5/5 gpt2-owt upload --dry_run (no token, nothing sent)"
"$GPT2OWT" upload "$RELEASE" --repo_id demo-user/gpt2-owt-tiny-demo --checkpoints "$RUN/hf" --tag v0.1-demo --dry_run

stage "summary"
"$PY" - "$DATA" "$RUN" "$RESULTS" "$RELEASE" <<'PYEOF'
import json, sys
from pathlib import Path
from gpt2_owt.training.run_dir import read_metrics
data, run, results, release = map(Path, sys.argv[1:])
train = [m for m in read_metrics(run) if "train_loss" in m]
val = [m for m in read_metrics(run) if "val_loss" in m]
manifest = json.loads((data / "manifest.json").read_text())
print(f"data      {data}  ({json.dumps(manifest.get('splits', manifest.get('counts', {})))[:160]})")
print(f"run       {run}")
print(f"  train loss {train[0]['train_loss']:.3f} (step {train[0]['step']}) -> {train[-1]['train_loss']:.3f} "
      f"(step {train[-1]['step']}, {train[-1]['tokens']:,} tokens)")
if val:
    print(f"  val loss   {val[0]['val_loss']:.3f} (step {val[0]['step']}) -> {val[-1]['val_loss']:.3f} (step {val[-1]['step']})")
print(f"  exports    {', '.join(sorted(p.name for p in (run / 'hf').iterdir()))}")
print(f"results   {results}")
for task, r in json.loads(results.read_text())["tasks"].items():
    print(f"  {task:16s} " + "  ".join(f"{k} {v:.4g}" for k, v in r["metrics"].items()))
print(f"release   {release}")
for p in sorted(release.rglob("*")):
    if p.is_file():
        print(f"  {p.relative_to(release)}  ({p.stat().st_size:,} bytes)")
PYEOF
