"""Bad inputs to `gpt2-owt attribute` (tracing/attribute.py), through the real CLI on a copy of the tiny release run
({run}: 2 steps of seq_len 32 and 4 rows, exports hf/step0, hf/step1, hf/final, checkpoints step1 and step2).
Each is refused before any model is loaded: one `error:` line, exit 2, nothing written (tests/helpers/cli.py)."""

import json

from helpers.cli import Case, table_tests, user_file

ATTRIBUTE = ["python", "-m", "gpt2_owt.tracing.attribute", "--run_dir", "{run}"]
QUERY = ["--query", "The company said"]

CASES = [
    Case("attribute_unknown_method", ATTRIBUTE + QUERY + ["--method", "magic"], None,
         "--method magic: Bergson's methods here are trackstar, ekfac, source",
         fix="use --method trackstar, ekfac or source (docs/attribution.md: why not MAGIC)"),
    Case("attribute_checkpoint_not_in_run", ATTRIBUTE + QUERY + ["--checkpoint", "step9"], None,
         "--checkpoint step9: {run} has neither hf/step9 nor checkpoints/step9 (steps saved: step0, step1, step2)",
         fix="pick one of the steps the message lists (the run's exports and kept checkpoints)"),
    Case("attribute_checkpoint_not_a_step", ATTRIBUTE + QUERY + ["--checkpoint", "final"], None,
         "--checkpoint final: expected a step name stepN",
         fix="name the checkpoint by its step: --checkpoint step200 (hf/final is the run's last step)"),
    Case("attribute_query_longer_than_window", ATTRIBUTE + ["--query", " word" * 40], None,
         "the query is 41 tokens with its context, longer than a training window (33 = seq_len + 1)",
         fix="shorten the query to at most seq_len tokens (with its prompt, seq_len + 1)"),
    Case("attribute_no_query", ATTRIBUTE, None, "give --query TEXT, or --prompt P with --completion C",
         fix="say what to attribute: --query TEXT, or --prompt P --completion C"),
    Case("attribute_completion_without_prompt", ATTRIBUTE + ["--completion", " said"], None,
         "--completion needs a non-empty --prompt",
         fix="add --prompt (the context the completion follows), or use --query"),
    Case("attribute_step0", ATTRIBUTE + QUERY + ["--checkpoint", "step0"], None,
         "step0 has trained on nothing", fix="attribute at a later --checkpoint"),
    Case("attribute_candidates_after_checkpoint", ATTRIBUTE + QUERY + ["--checkpoint", "step1", "--candidates",
                                                                        "updates", "0:2"], None,
         "the model attributed at step1 trained on updates < 1 only",
         fix="candidates must come before the checkpoint: --candidates updates A:B with B <= N for stepN"),
    Case("attribute_candidates_bad_range", ATTRIBUTE + QUERY + ["--candidates", "updates", "2:1"], None,
         "--candidates updates 2:1: expected A:B with 0 <= A < B", fix="give the updates as A:B (updates A..B-1)"),
    Case("attribute_candidates_missing_report", ATTRIBUTE + QUERY + ["--candidates", "{ws}/find.json"], None,
         "--candidates {ws}/find.json: no such trace find report",
         fix="write it with `gpt2-owt trace find ... --json > find.json`, or give `updates A:B`"),
    Case("attribute_candidates_damaged_report", ATTRIBUTE + QUERY + ["--candidates", "{ws}/find.json"],
         user_file("find.json", json.dumps({"count": 1}).encode()),
         "trace find report {ws}/find.json is damaged (no 'occurrences' list)",
         fix="write the report again with `gpt2-owt trace find ... --json`"),
    Case("attribute_sample_too_large", ATTRIBUTE + QUERY + ["--sample", "99"], None,
         "--sample 99 is more than the 8 candidate sequences (updates 0:2)",
         fix="sample at most as many sequences as the candidates hold"),
    Case("attribute_checkpoints_without_source", ATTRIBUTE + QUERY + ["--checkpoints", "step1", "step2"], None,
         "--checkpoints is for --method source; trackstar attributes at one --checkpoint",
         fix="use --checkpoint stepN, or --method source for several checkpoints"),
    Case("attribute_source_checkpoint_missing", ATTRIBUTE + QUERY + ["--method", "source", "--checkpoints",
                                                                      "step1", "step7"], None,
         "--method source needs checkpoints/stepN with optimizer states; {run} has no step7 (kept: step1, step2)",
         fix="unroll over checkpoints the run kept (checkpoint_interval / keep_last_checkpoints decide which)"),
    Case("attribute_not_a_run", ["python", "-m", "gpt2_owt.tracing.attribute", "--run_dir", "{ws}"] + QUERY, None,
         "{ws} is not a run folder (no training_config.json)", fix="point --run_dir at a training run's output_dir"),
]

test_bad_input_is_one_clear_line, test_bad_input_in_a_real_process = table_tests(CASES)
