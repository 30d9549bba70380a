"""Bad inputs to `gpt2-owt replay` (tracing/replay.py), through the real CLI on a copy of the tiny release run
({run}: 2 steps of seq_len 32 and 4 rows, checkpoints step1 and step2, exports hf/step0, hf/step1, hf/final).
Each is one `error:` line, exit 2, nothing written and the run untouched (tests/helpers/cli.py)."""

from helpers.cli import Case, table_tests, truncate, user_file, user_folder

REPLAY = ["python", "-m", "gpt2_owt.tracing.replay", "--run_dir", "{run}"]
WINDOW = ["--from_step", "1", "--to_step", "2"]
QUERY = ["--query", " the company"]
REMOVE = ["--remove", "{ws}/remove.jsonl"]
ONE_ROW = user_file("remove.jsonl", b'{"update": 1, "row": 0}\n')

CASES = [
    Case("replay_from_step_without_checkpoint", REPLAY + ["--from_step", "0", "--to_step", "2"] + REMOVE + QUERY,
         ONE_ROW, "{run} has no checkpoint of step 0 (kept: step1, step2): a replay starts from a saved optimizer "
         "state", fix="start --from_step at a step the run kept a checkpoint of (the message lists them)"),
    Case("replay_to_step_beyond_run", REPLAY + ["--from_step", "1", "--to_step", "5"] + REMOVE + QUERY, ONE_ROW,
         "--to_step 5 is beyond the 2 steps {run} trained", fix="end --to_step at or before the run's last step"),
    Case("replay_to_step_not_after_from_step", REPLAY + ["--from_step", "2", "--to_step", "2"] + REMOVE + QUERY,
         ONE_ROW, "--to_step 2 must be after --from_step 2", fix="replay at least one update: --to_step > --from_step"),
    Case("replay_remove_outside_window", REPLAY + WINDOW + REMOVE + QUERY,
         user_file("remove.jsonl", b'{"update": 0, "row": 1}\n'),
         "--remove {ws}/remove.jsonl: line 1 names update 0, outside the replayed updates 1..1",
         fix="remove only sequences of the replayed updates from_step..to_step-1"),
    Case("replay_remove_bad_row", REPLAY + WINDOW + REMOVE + QUERY,
         user_file("remove.jsonl", b'{"update": 1, "row": 4}\n'),
         "line 1 names row 4 of a global batch of 4", fix="rows are 0..global_batch_size-1 of the update's batch"),
    Case("replay_remove_not_rows", REPLAY + WINDOW + REMOVE + QUERY, user_file("remove.jsonl", b'{"update": 1}\n'),
         "line 1 is not {\"update\": int, \"row\": int}", fix="write one {\"update\": u, \"row\": r} object per line"),
    Case("replay_remove_empty_file", REPLAY + WINDOW + REMOVE + QUERY, user_file("remove.jsonl", b""),
         "nothing to remove: --remove {ws}/remove.jsonl lists no sequence",
         fix="list the sequences to leave out, one {\"update\": u, \"row\": r} per line"),
    Case("replay_remove_missing_file", REPLAY + WINDOW + REMOVE + QUERY, None, "{ws}/remove.jsonl not found",
         fix="give the path of an existing JSONL file to --remove"),
    Case("replay_query_longer_than_window", REPLAY + WINDOW + REMOVE + ["--query", " word" * 40], ONE_ROW,
         "with its prefix is 41 tokens, longer than the run's training windows (seq_len 32 + 1)",
         fix="shorten the query (with its prefix) to at most seq_len + 1 tokens"),
    Case("replay_no_query", REPLAY + WINDOW + REMOVE, ONE_ROW, "give at least one --query",
         fix="say whose loss to follow: --query TEXT"),
    Case("replay_no_removal", REPLAY + WINDOW + QUERY, None,
         "give exactly one of --remove, --remove_documents and --remove_text",
         fix="say what to leave out: --remove FILE.jsonl, --remove_documents D ... or --remove_text TEXT"),
    Case("replay_two_removals", REPLAY + WINDOW + REMOVE + ["--remove_documents", "1"] + QUERY, ONE_ROW,
         "give exactly one of --remove, --remove_documents and --remove_text", fix="keep one way of removing"),
    Case("replay_unknown_document", REPLAY + WINDOW + ["--remove_documents", "999"] + QUERY, None,
         "--remove_documents 999 is not a train document", fix="use document numbers as `gpt2-owt trace find` "
         "reports them (train split)"),
    Case("replay_remove_text_without_index", REPLAY + WINDOW + ["--remove_text", " the"] + QUERY, None,
         "no trace index", fix="build it first: gpt2-owt trace index --data_dir DATA"),
    Case("replay_nothing_to_remove", REPLAY + WINDOW + ["--remove_text", " Zorblax marmalade", "--data_dir",
                                                        "{indexed}"] + QUERY, None,
         "nothing to remove: no sequence of updates 1..1 holds the text given",
         fix="check where the text was fed (gpt2-owt trace find) and replay a window that holds it"),
    Case("replay_every_zero", REPLAY + WINDOW + REMOVE + QUERY + ["--every", "0"], ONE_ROW, "--every",
         fix="report every K >= 1 updates"),
    Case("replay_not_a_run", ["python", "-m", "gpt2_owt.tracing.replay", "--run_dir", "{data}"] + WINDOW + REMOVE
         + QUERY, ONE_ROW, "is not a run folder (no training_config.json)", fix="point --run_dir at a training run"),
    Case("replay_output_inside_run", REPLAY + WINDOW + REMOVE + QUERY + ["--output_dir", "{run}/replay"], ONE_ROW,
         "--output_dir {run}/replay is inside the run_dir", fix="write the replay outside the run folder"),
    Case("replay_output_user_folder", REPLAY + WINDOW + REMOVE + QUERY + ["--output_dir", "{ws}/mine"],
         lambda ws: (ONE_ROW(ws), user_folder("mine")(ws)), "--output_dir {ws}/mine was not made by replay",
         fix="choose a new --output_dir (or one an earlier replay wrote)"),
    Case("replay_damaged_checkpoint", REPLAY + WINDOW + REMOVE + QUERY + ["--output_dir", "{ws}/out"],
         lambda ws: (ONE_ROW(ws), truncate("run/checkpoints/step1/optimizer.bin")(ws)),
         "checkpoint {run}/checkpoints/step1 is damaged: optimizer.bin does not match its sha256",
         fix="replay from another kept checkpoint, or a copy of the run where this one is intact"),
]

test_bad_input_is_one_clear_line, test_bad_input_in_a_real_process = table_tests(CASES)
