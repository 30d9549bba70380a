"""Bad input -> one `error:` line, exit code 2, no traceback, every input byte-identical and nothing half-written
(issues 11 and 17). The case list IS the table: each case runs the real command in a subprocess.

argv placeholders: {data} {run} {model} {release} {results} {llmc} are fresh copies of the session inputs
(tests/helpers/cli.py), {ro} a read-only folder, {full} a full file system, {ws} the test's folder.
The snapshot compares every file under {ws} before and after: a refused command must not change, add or leave
behind anything (no temp files, no partial output).
(prepare_data / manifest verify cases live in tests/test_bad_inputs_prepare.py.)
"""

from helpers.cli import (Case, copy_results_into, edit_json, overwrite, remove, table_tests, truncate, user_file,
                         user_folder)
from helpers.training import TINY_YAML


HUGE_HEADER = (2**40).to_bytes(8, "little")  # a safetensors header length far past the end of the file
EVAL = ["python", "-m", "gpt2_owt.eval.evaluate"]
QUICK = ["--tasks", "lambada_openai", "--limit", "2", "--max_length", "32"]
CARD = ["python", "-m", "gpt2_owt.model_card.build"]
CONVERT = ["python", "-m", "gpt2_owt.modeling.convert"]
UPLOAD = ["python", "-m", "gpt2_owt.upload"]
ORDER = ["python", "-m", "gpt2_owt.training.data_order", "--config", str(TINY_YAML)]
TRAIN = ["python", "-m", "gpt2_owt.training.train", "--config", str(TINY_YAML), "--report_to", "none"]
HARNESS = ["python", "-m", "gpt2_owt.eval.harness_tasks"]

def damage_second_line(relative: str):
    """A JSONL log whose second row is no longer JSON (a damaged block in the middle of the file)."""
    def setup(ws):
        path = ws.path(relative)
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join([lines[0], "{not json\n", *lines[2:]]))
    return setup


CASES = [
    # training.data_order
    Case("order_missing_data_dir", ORDER + ["--data_dir", "{ws}/nope", "--update", "0"], None,
         "{ws}/nope/train.bin not found: is {ws}/nope a data_dir made by `gpt2-owt prepare`?",
         fix="pass the --data_dir that `gpt2-owt prepare` wrote (it holds train.bin and manifest.json)"),
    Case("order_negative_update", ORDER + ["--data_dir", "{data}", "--update", "-1"], None, "--update must be >= 0, got -1",
         fix="updates count from 0: pass --update 0 or more"),
    Case("order_truncated_train_bin", ORDER + ["--data_dir", "{data}", "--update", "0"], truncate("data/train.bin", 4097),
         "{data}/train.bin is truncated or damaged: 4097 bytes is not a whole number of 2-byte token ids",
         fix="run `gpt2-owt verify-data --data_dir DATA`; prepare the data again if it fails"),
    Case("order_update_past_the_recipe", ORDER + ["--data_dir", "{data}", "--update", "60"], None,
         "--update 60 is past the run: the recipe's max_steps 60 trains updates 0..59",
         fix="ask about an update below the recipe's max_steps (updates count from 0)"),
    Case("order_update_past_the_run", ["python", "-m", "gpt2_owt.training.data_order", "--run_dir", "{run}",
                                       "--data_dir", "{data}", "--update", "2"], None,
         "--update 2 is past the run: {run} trained updates 0..1 (2 steps)",
         fix="ask about an update the run did (below its steps_done, run_info.json)"),
    Case("order_folder_holding_its_run", ["python", "-m", "gpt2_owt.training.data_order", "--run_dir", "{ws}",
                                          "--data_dir", "{data}", "--update", "0"], lambda ws: ws.get("run"),
         "{ws} is not a run folder (no training_config.json): did you mean {ws}/run? (it holds a run)",
         fix="pass the run folder itself: the one holding training_config.json (the demo's runs/demo/<timestamp>/run)"),
    Case("order_seq_len_past_n_positions", ORDER + ["--data_dir", "{data}", "--update", "0", "--seq_len", "512"],
         None, "seq_len 512 exceeds the model's n_positions 256",
         fix="a recipe `train` refuses has no data order: keep seq_len <= the model's n_positions"),
    Case("order_unknown_field", ORDER + ["--data_dir", "{data}", "--update", "0", "--learning_rat", "1"], None,
         "learning_rat",
         fix="check the spelling against `gpt2-owt train --help` (the recipe's fields)"),
    # training.train (input checks, before anything is written)
    Case("train_output_inside_data_dir", TRAIN + ["--data_dir", "{data}", "--output_dir", "{data}/run"], None,
         "--output_dir {data}/run is inside the data_dir {data}: writing there could replace or delete the data_dir",
         fix="choose an --output_dir outside the data_dir, e.g. runs/NAME"),
    Case("train_output_is_data_dir", TRAIN + ["--data_dir", "{data}", "--output_dir", "{data}",
                                              "--overwrite_output_dir", "true"], None,
         "--output_dir {data} is the data_dir {data}",
         fix="choose an --output_dir apart from the data_dir, e.g. runs/NAME"),
    Case("train_output_contains_data_dir", TRAIN + ["--data_dir", "{data}", "--output_dir", "{ws}"], None,
         "--output_dir {ws} contains the data_dir {data}",
         fix="choose an --output_dir that does not hold the data_dir, e.g. runs/NAME"),
    Case("train_missing_data_dir", TRAIN + ["--data_dir", "{ws}/nope", "--output_dir", "{ws}/run"], None,
         "data_dir {ws}/nope does not exist",
         fix="prepare the data first (`gpt2-owt prepare --output_dir DATA`) or fix the path"),
    Case("train_output_is_a_file", TRAIN + ["--data_dir", "{data}", "--output_dir", "{ws}/notes.txt"],
         user_file("notes.txt"), "output_dir {ws}/notes.txt exists and is not a folder",
         fix="--output_dir is a folder: give a new folder's path"),
    Case("train_output_holds_another_run", TRAIN + ["--data_dir", "{data}", "--output_dir", "{run}"], None,
         "output_dir {run} already holds a run: pass --resume_from_checkpoint auto",
         fix="continue it with --resume_from_checkpoint auto, or give a new --output_dir"),
    Case("train_batch_not_divisible", TRAIN + ["--data_dir", "{data}", "--output_dir", "{ws}/run",
                                               "--micro_batch_size", "3"], None, "not divisible",
         fix="make global_batch_size a multiple of micro_batch_size x the number of processes"),
    Case("train_run_config_derived_field_edited", ["python", "-m", "gpt2_owt.training.train", "--config",
                                                   "{run}/training_config.json", "--data_dir", "{data}",
                                                   "--output_dir", "{ws}/new", "--report_to", "none"],
         edit_json("run/training_config.json", total_steps=99),
         "{run}/training_config.json: derived total_steps 99 (its settings give 2)",
         fix="a run's training_config.json is a recipe as written: edit its settings, not its derived fields"),
    Case("train_resume_damaged_fed_batches", ["python", "-m", "gpt2_owt.training.train", "--config",
                                              "{run}/training_config.json", "--data_dir", "{data}", "--output_dir",
                                              "{run}", "--resume_from_checkpoint", "auto", "--report_to", "none"],
         damage_second_line("run/fed_batches.jsonl"),
         "run log {run}/fed_batches.jsonl is damaged at line 2 (not a JSON row with an integer 'update')",
         fix="restore the run's logs from a backup; the resume rewrites nothing until they read whole"),
    # eval.evaluate
    Case("eval_truncated_weights", EVAL + ["--model", "{model}", "--output", "{ws}/r.json"],
         truncate("model/model.safetensors"), "model weights {model}/model.safetensors are damaged or truncated",
         fix="export the checkpoint again (RUN/hf/stepN) or download the model again"),
    Case("eval_corrupt_weights_header", EVAL + ["--model", "{model}", "--output", "{ws}/r.json"],
         overwrite("model/model.safetensors", HUGE_HEADER, offset=0),
         "model weights {model}/model.safetensors are damaged or truncated",
         fix="export the checkpoint again (RUN/hf/stepN) or download the model again"),
    Case("eval_damaged_config", EVAL + ["--model", "{model}", "--output", "{ws}/r.json"],
         overwrite("model/config.json", b'{"model_type": "gpt2", '),
         "model config {model}/config.json is damaged (not valid JSON",
         fix="restore config.json from the run's export or the Hub repo"),
    Case("eval_llama_config", EVAL + ["--model", "{model}", "--output", "{ws}/r.json"],
         edit_json("model/config.json", model_type="llama"),
         "model config {model}/config.json has model_type 'llama'; only 'gpt2' is supported",
         fix="evaluate a GPT-2 model folder (model_type gpt2)"),
    Case("eval_no_tokenizer_files", EVAL + ["--model", "{model}", "--output", "{ws}/r.json"],
         remove("model/tokenizer.json", "model/vocab.json", "model/merges.txt", "model/tokenizer_config.json"),
         "{model} has no tokenizer files (tokenizer.json, or vocab.json + merges.txt): pass --tokenizer DIR",
         fix="pass --tokenizer with a folder holding the GPT-2 tokenizer files"),
    Case("eval_damaged_tokenizer", EVAL + ["--model", "{model}", "--output", "{ws}/r.json"],
         truncate("model/tokenizer.json"), "tokenizer file {model}/tokenizer.json is damaged (not valid JSON",
         fix="restore tokenizer.json from the run's export or the Hub repo"),
    Case("eval_truncated_val_bin", EVAL + ["--model", "{model}", "--tasks", "owt_val", "--data_dir", "{data}",
                                           "--output", "{ws}/r.json"], truncate("data/val.bin", 1001),
         "{data}/val.bin is truncated or damaged: 1001 bytes is not a whole number of 2-byte token ids",
         fix="run `gpt2-owt verify-data --data_dir DATA`; prepare the data again if it fails"),
    Case("eval_output_is_a_folder", EVAL + ["--model", "{model}", "--output", "{ws}/out"], user_folder("out"),
         "--output {ws}/out is an existing folder; give a file path",
         fix="--output is a file: give e.g. results.json"),
    Case("eval_output_is_a_user_file", EVAL + ["--model", "{model}", "--output", "{ws}/notes.txt"],
         user_file("notes.txt"), "--output {ws}/notes.txt exists and is not a results.json written by eval.evaluate",
         fix="give a new --output path: eval replaces only a results.json it wrote"),
    Case("eval_output_read_only", EVAL + ["--model", "{model}", "--output", "{ro}/r.json"], None,
         "--output {ro}/r.json cannot be written: {ro} is not writable",
         fix="write --output to a folder you can write to"),
    Case("eval_output_disk_full", EVAL + ["--model", "{model}", *QUICK, "--output", "{full}/r.json"], None,
         "cannot write {full}/r.json: No space left on device",
         fix="free space on that disk or write --output elsewhere"),
    Case("eval_unknown_task", EVAL + ["--model", "{model}", "--tasks", "wikitxt", "--output", "{ws}/r.json"], None,
         "unknown task(s) ['wikitxt']",
         fix="use the tasks listed by `gpt2-owt eval --help` (comma-separated)"),
    # model_card.build
    Case("card_output_is_run_dir", CARD + ["--run_dir", "{run}", "--output_dir", "{run}", "--overwrite"], None,
         "--output_dir {run} is the run_dir {run}: writing there could replace or delete the run_dir",
         fix="give the release its own --output_dir, e.g. release/"),
    Case("card_output_above_run_dir", CARD + ["--run_dir", "{run}", "--output_dir", "{ws}", "--overwrite"], None,
         "--output_dir {ws} contains the run_dir {run}",
         fix="give the release its own --output_dir, outside the run_dir's parent"),
    Case("card_output_inside_run_dir", CARD + ["--run_dir", "{run}", "--output_dir", "{run}/release"], None,
         "--output_dir {run}/release is inside the run_dir {run}",
         fix="give the release its own --output_dir outside the run_dir"),
    Case("card_overwrite_user_folder", CARD + ["--run_dir", "{run}", "--output_dir", "{ws}/mine", "--overwrite"],
         user_folder("mine"), "--output_dir {ws}/mine was not made by model_card.build (no release_manifest.json); "
         "writing there would replace what it holds (notes.txt): remove it yourself or choose another folder",
         fix="give a new --output_dir; --overwrite replaces only a release the card command made"),
    Case("card_output_holds_eval_results", CARD + ["--run_dir", "{run}", "--eval_results", "{ws}/out/results.json",
                                                   "--output_dir", "{ws}/out", "--overwrite"],
         copy_results_into("out"), "--output_dir {ws}/out contains the eval results file {ws}/out/results.json",
         fix="keep results.json outside --output_dir"),
    Case("card_truncated_weights", CARD + ["--run_dir", "{run}", "--output_dir", "{ws}/rel"],
         truncate("run/hf/final/model.safetensors"),
         "model weights {run}/hf/final/model.safetensors are damaged or truncated",
         fix="export the final checkpoint again, e.g. resume the run so it rewrites hf/final"),
    Case("card_llama_config", CARD + ["--run_dir", "{run}", "--output_dir", "{ws}/rel"],
         edit_json("run/hf/final/config.json", model_type="llama"), "has model_type 'llama'",
         fix="build the card from a GPT-2 run (model_type gpt2)"),
    Case("card_damaged_run_info", CARD + ["--run_dir", "{run}", "--output_dir", "{ws}/rel"],
         overwrite("run/run_info.json", b"\x00garbage"), "run info {run}/run_info.json is damaged (not valid JSON",
         fix="restore run_info.json from a backup of the run; the card reads it for every number"),
    Case("card_output_read_only", CARD + ["--run_dir", "{run}", "--output_dir", "{ro}/rel"], None,
         "--output_dir {ro}/rel cannot be written: {ro} is not writable",
         fix="write --output_dir to a folder you can write to"),
    # upload.py (--dry_run: every check runs, nothing goes to the network)
    Case("upload_edited_config", UPLOAD + ["{release}", "--repo_id", "a/b", "--dry_run"],
         edit_json("release/config.json", n_ctx=2048),
         "{release}/config.json differs from the sha256 recorded in release_manifest.json",
         fix="rebuild the release with `gpt2-owt card` instead of editing its files"),
    Case("upload_edited_card", UPLOAD + ["{release}", "--repo_id", "a/b", "--dry_run"],
         overwrite("release/README.md", b"# my own card\n"),
         "{release}/README.md differs from the sha256 recorded in release_manifest.json",
         fix="rebuild the release with `gpt2-owt card` instead of editing its files"),
    Case("upload_training_log_damaged", UPLOAD + ["{release}", "--repo_id", "a/b", "--dry_run", "--with_training_logs",
                                                  "{run}"], damage_second_line("run/metrics.jsonl"),
         "training log metrics.jsonl {run}/metrics.jsonl is damaged at line 2",
         fix="publish the logs of an intact run: restore metrics.jsonl from a backup of the run"),
    Case("upload_extra_file", UPLOAD + ["{release}", "--repo_id", "a/b", "--dry_run"], user_file("release/notes.txt"),
         "{release} does not match its release_manifest.json (not in it: notes.txt)",
         fix="remove the extra file, or rebuild the release with `gpt2-owt card`"),
    Case("upload_no_manifest", UPLOAD + ["{release}", "--repo_id", "a/b", "--dry_run"],
         remove("release/release_manifest.json"), "{release}/release_manifest.json not found",
         fix="upload the folder `gpt2-owt card` wrote (it holds release_manifest.json)"),
    Case("upload_damaged_manifest", UPLOAD + ["{release}", "--repo_id", "a/b", "--dry_run"],
         truncate("release/release_manifest.json"), "{release}/release_manifest.json is damaged",
         fix="rebuild the release with `gpt2-owt card`"),
    # modeling.convert
    Case("convert_truncated_weights", CONVERT + ["--to", "llmc", "--model", "{model}", "--output", "{ws}/m.bin"],
         truncate("model/model.safetensors"), "model weights {model}/model.safetensors are damaged or truncated",
         fix="export the checkpoint again (RUN/hf/stepN) or download the model again"),
    Case("convert_corrupt_weights_header", CONVERT + ["--to", "nanogpt", "--model", "{model}", "--output",
                                                      "{ws}/ckpt.pt"],
         overwrite("model/model.safetensors", HUGE_HEADER, offset=0), "are damaged or truncated",
         fix="export the checkpoint again (RUN/hf/stepN) or download the model again"),
    Case("convert_llama_config", CONVERT + ["--to", "llmc", "--model", "{model}", "--output", "{ws}/m.bin"],
         edit_json("model/config.json", model_type="llama"), "has model_type 'llama'; only 'gpt2' is supported",
         fix="convert a GPT-2 model folder (model_type gpt2)"),
    Case("convert_output_is_a_folder", CONVERT + ["--to", "nanogpt", "--model", "{model}", "--output", "{ws}/out",
                                                  "--overwrite"], user_folder("out"),
         "--output {ws}/out is an existing folder; give a file path",
         fix="--output is a file: give e.g. model.bin or ckpt.pt"),
    Case("convert_output_inside_model", CONVERT + ["--to", "llmc", "--model", "{model}", "--output",
                                                   "{model}/model.safetensors", "--overwrite"], None,
         "--output {model}/model.safetensors is inside the model folder {model}",
         fix="write --output outside the model folder"),
    Case("convert_overwrite_user_file", CONVERT + ["--to", "llmc", "--model", "{model}", "--output",
                                                   "{ws}/notes.txt", "--overwrite"], user_file("notes.txt"),
         "--output {ws}/notes.txt is not a llmc checkpoint file; --overwrite replaces only a file of the format",
         fix="give a new --output path: --overwrite replaces only a file of the target format"),
    Case("convert_output_read_only", CONVERT + ["--to", "llmc", "--model", "{model}", "--output", "{ro}/m.bin"], None,
         "--output {ro}/m.bin cannot be written: {ro} is not writable",
         fix="write --output to a folder you can write to"),
    Case("convert_import_overwrite_user_folder", CONVERT + ["--from", "llmc", "{llmc}", "--output_dir", "{ws}/mine",
                                                            "--overwrite"], user_folder("mine"),
         "--output_dir {ws}/mine was not made by modeling.convert (no conversion.json)",
         fix="give a new --output_dir; --overwrite replaces only a folder convert made"),
    Case("convert_import_output_holds_source", CONVERT + ["--from", "llmc", "{llmc}", "--output_dir", "{ws}",
                                                          "--overwrite"], None,
         "--output_dir {ws} contains the source checkpoint {llmc}",
         fix="give an --output_dir that does not hold the source checkpoint"),
    # eval.harness_tasks
    Case("harness_output_is_a_file", HARNESS + ["--output_dir", "{ws}/notes.txt"], user_file("notes.txt"),
         "--output_dir {ws}/notes.txt is an existing file, not a folder",
         fix="--output_dir is a folder: give a new folder's path"),
    Case("harness_output_read_only", HARNESS + ["--output_dir", "{ro}/tasks"], None,
         "--output_dir {ro}/tasks cannot be written: {ro} is not writable",
         fix="write --output_dir to a folder you can write to"),
    Case("harness_bad_data_source", HARNESS + ["--output_dir", "{ws}/tasks", "--data_source", "web"], None,
         "--data_source must be one of shipped, hub, got 'web'",
         fix="pass --data_source shipped (the repository's copy) or hub"),
]

test_bad_input_is_one_clear_line, test_bad_input_in_a_real_process = table_tests(CASES)


def test_the_table_covers_every_command():
    commands = {c.argv[2] for c in CASES}
    assert commands == {"gpt2_owt.training.data_order", "gpt2_owt.training.train", "gpt2_owt.eval.evaluate",
                        "gpt2_owt.model_card.build", "gpt2_owt.upload", "gpt2_owt.modeling.convert",
                        "gpt2_owt.eval.harness_tasks"}
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
