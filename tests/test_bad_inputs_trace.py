"""Bad inputs to the `gpt2-owt trace` verbs (tracing/losses.py, tracing/spans.py, ...), through the real CLI on
copies of the tiny release run ({run}: 2 updates of seq_len 32 and 4 rows, sequence losses recorded, exports hf/step0,
hf/step1, hf/final) and its data ({data}; {indexed} with the trace index). Each is one `error:` line, exit 2,
nothing written and every input unchanged (tests/helpers/cli.py)."""

from helpers.cli import Case, overwrite, table_tests, truncate

LOSSES = ["python", "-m", "gpt2_owt.tracing.losses", "--run_dir", "{run}", "--data_dir", "{data}"]

CASES = [
    Case("losses_damaged_info", LOSSES + ["--updates", "0:2"], overwrite("run/sequence_losses/info.json", b'{"glob'),
         "sequence losses info {run}/sequence_losses/info.json is damaged (not valid JSON",
         fix="the run's sequence_losses/ is damaged: restore it from a backup of the run"),
    Case("losses_info_without_batch_size", LOSSES + ["--updates", "0:2"],
         overwrite("run/sequence_losses/info.json", b'{"global_batch_size": 0, "steps_per_shard": 1000}'),
         "sequence losses info {run}/sequence_losses/info.json is damaged (global_batch_size 0, expected a positive "
         "integer)", fix="the run's sequence_losses/ is damaged: restore it from a backup of the run"),
    Case("losses_info_of_another_batch_size", LOSSES + ["--updates", "0:2"],
         overwrite("run/sequence_losses/info.json", b'{"global_batch_size": 8, "steps_per_shard": 1000}'),
         "sequence losses info {run}/sequence_losses/info.json records global_batch_size 8, the run trained 4",
         fix="the run's sequence_losses/ belongs to another run: restore it from a backup of this run"),
    Case("losses_truncated_shard", LOSSES + ["--updates", "0:2"], truncate("run/sequence_losses/steps_00000000.f32", 20),
         "updates 0..1: {run} recorded the losses of updates 0..0",
         fix="ask about the updates the run recorded (a cut shard keeps its whole rows)"),
]

test_bad_input_is_one_clear_line, test_bad_input_in_a_real_process = table_tests(CASES)
