"""The release folder (`release_dir/`, written by model_card/build.py, published by upload.py): its layout, once.

    release_dir/
      model.safetensors, config.json, generation_config.json   the released export (run_dir/hf/<checkpoint>)
      tokenizer.json, tokenizer_config.json, vocab.json, merges.txt   the shipped tokenizer (modeling/tokenizer/)
      README.md                  the model card
      training_config.json       copy of run_dir/training_config.json
      manifest.json              copy of the data manifest the run trained on
      eval_results.json          copy of the eval stage's results.json
      LICENSE-NOTICE-tokenizer.md, LICENSE-NOTICE-data.md
      loss_curve.png ...         plots (core/plots.py)
      release_manifest.json      {"files": {name: {"bytes", "sha256"}}, "weights_sha256", "checkpoint", "step",
                                  "tokens", "run_dir"}: written last, over every other file

Torch-free: upload.py checks a release with it.
"""

from gpt2_owt.modeling.hf_folder import GENERATION_CONFIG, MODEL_CONFIG, WEIGHTS
from gpt2_owt.modeling.tokenizer import TOKENIZER_FILES

MODEL_FILES = (MODEL_CONFIG, WEIGHTS)
OPTIONAL_MODEL_FILES = (GENERATION_CONFIG,)
README = "README.md"
TRAINING_CONFIG = "training_config.json"
EVAL_RESULTS = "eval_results.json"
DATA_MANIFEST = "manifest.json"
RELEASE_MANIFEST = "release_manifest.json"
TOKENIZER_NOTICE = "LICENSE-NOTICE-tokenizer.md"
DATA_NOTICE = "LICENSE-NOTICE-data.md"

# What a complete release holds, by what it is for (upload.py refuses a release missing any of these).
REQUIRED_FILES = {
    "weights": (WEIGHTS, MODEL_CONFIG),
    "tokenizer": TOKENIZER_FILES,
    "model card": (README,),
    "eval results": (EVAL_RESULTS,),
}
# What an intermediate export (run_dir/hf/stepN) needs to be published as a step branch.
EXPORT_REQUIRED = (WEIGHTS, MODEL_CONFIG)


def manifest_differences(recorded: dict, present: dict[str, str | None]) -> tuple[list[str], list[str], list[str]]:
    """(extra, missing, changed) names of a release's files against its release_manifest.json `files` table.
    `present`: name -> sha256 of each file the release holds (None where the source cannot tell without
    downloading, e.g. a small file on the Hub: presence is all that is checked then). upload.py (before it publishes)
    and verify (after) judge a release by this one comparison."""
    names = set(present) - {RELEASE_MANIFEST}
    extra, missing = sorted(names - set(recorded)), sorted(set(recorded) - names)
    changed = [name for name in sorted(names & set(recorded)) if present[name] is not None
               and present[name] != (recorded[name] if isinstance(recorded[name], dict) else {}).get("sha256")]
    return extra, missing, changed
