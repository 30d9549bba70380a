"""The Hub Space of a gpt2-owt release: the trace explorer (`gpt2-owt explore --repo_id ID`) over the release that
space.json beside this file names. `gpt2-owt card --with_space` writes this folder into the release (space/: this
file, space.json, requirements.txt pinning the code that trained the model, and the Space's README.md);
publish it with `hf upload USER/NAME-explorer RELEASE/space --repo-type space` (docs/explorer.md).

Space variables override space.json: GPT2_OWT_REPO_ID (the release), GPT2_OWT_DATA_DIR (a prepared data folder with
its trace index, e.g. on the Space's persistent storage /data: spans, exposures and the data order need it).
"""

import json
import os
from pathlib import Path

from gpt2_owt.tracing.explore_app import build_app, launch
from gpt2_owt.tracing.explorer import Explorer

SETTINGS = Path(__file__).with_name("space.json")


def explorer() -> Explorer:
    settings = json.loads(SETTINGS.read_text()) if SETTINGS.is_file() else {}
    repo_id = os.environ.get("GPT2_OWT_REPO_ID") or settings.get("repo_id")
    if not repo_id:
        raise SystemExit(f"no release to explore: set GPT2_OWT_REPO_ID or write {SETTINGS}")
    return Explorer(repo_id=repo_id, data_dir=os.environ.get("GPT2_OWT_DATA_DIR") or settings.get("data_dir"))


if __name__ == "__main__":
    # Host and port from the environment (the Hub sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT for a Space).
    launch(build_app(explorer()), host=None, port=None, share=False)
