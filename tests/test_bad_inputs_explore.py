"""Bad inputs to `gpt2-owt explore` (tracing/explore.py) that stop it before it serves: one `error:` line, exit 2,
nothing written (tests/helpers/cli.py). Bad input inside the page (an empty prompt, a checkpoint gone, a data
folder without its index) is tests/test_explore.py's."""

import json

from helpers.cli import Case, edit_json, table_tests, user_file, user_folder

EXPLORE = ["python", "-m", "gpt2_owt.tracing.explore"]
RUN = EXPLORE + ["--run_dir", "{run}"]

CASES = [
    Case("explore_no_source", EXPLORE, None, "give exactly one of --run_dir and --repo_id",
         fix="name what to explore: --run_dir RUN (a training run) or --repo_id USER/NAME (a release)"),
    Case("explore_run_and_repo", RUN + ["--repo_id", "alice/tiny"], None, "give exactly one of --run_dir and --repo_id",
         fix="explore one run or one release at a time"),
    Case("explore_missing_run", EXPLORE + ["--run_dir", "{ws}/nope"], None, "run_dir {ws}/nope does not exist",
         fix="point --run_dir at a training run's output_dir"),
    Case("explore_not_a_run", EXPLORE + ["--run_dir", "{ws}"], None,
         "{ws} is not a run folder (no training_config.json)", fix="point --run_dir at a training run's output_dir"),
    Case("explore_data_not_prepared", RUN + ["--data_dir", "{ws}/notes"], user_folder("notes"),
         "data_dir {ws}/notes is not a prepared data folder (pass --data_dir)",
         fix="give the data folder the run trained on (`gpt2-owt prepare` made it), with its trace index"),
    Case("explore_data_of_another_run", RUN + ["--data_dir", "{data}"], edit_json("data/manifest.json", seed=1),
         "{run} was not trained on {data} (data manifest sha256 differs)",
         fix="give the data folder the run trained on (its manifest.json is the run's data_manifest.json)"),
    Case("explore_port_zero", RUN + ["--port", "0"], None, "--port must be > 0, got 0",
         fix="pick a free port: --port 7860"),
    Case("explore_unknown_host", RUN + ["--host", "no-such-host.invalid"], None,
         "--host no-such-host.invalid is not an address of this machine",
         fix="leave --host out (127.0.0.1) or give an address of this machine, e.g. 0.0.0.0 for every interface"),
    Case("explore_attribution_damaged", RUN + ["--attribution", "{ws}/a.json"], user_file("a.json", b"not json"),
         "attribution result {ws}/a.json is damaged (not valid JSON",
         fix="save the result again: gpt2-owt attribute ... --json > a.json"),
    Case("explore_attribution_foreign", RUN + ["--attribution", "{ws}/a.json"],
         user_file("a.json", json.dumps({"count": 1}).encode()),
         "attribution result {ws}/a.json is not `gpt2-owt attribute --json` output",
         fix="give the JSON that `gpt2-owt attribute ... --json` printed"),
    Case("explore_memorization_not_an_output", RUN + ["--memorization_dir", "{ws}/notes"], user_folder("notes"),
         "--memorization_dir {ws}/notes holds no `trace memorization` output (no memorization.json)",
         fix="give the --output_dir of `gpt2-owt trace memorization --run_dir RUN ...`"),
]

test_bad_input_is_one_clear_line, test_bad_input_in_a_real_process = table_tests(CASES)
