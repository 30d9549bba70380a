"""The Hub Space of a release: the trace explorer on `--repo_id` (tracing/space/app.py), written into the release's
space/ folder by `gpt2-owt card --with_space` (model_card/build.py). Torch- and gradio-free.

    space/app.py            tracing/space/app.py, verbatim (a file this module copies, never imports)
    space/space.json        {"repo_id": the release, "data_dir": null}
    space/requirements.txt  gpt2-owt[explore,trace] @ git+CODE_URL@COMMIT: the code that trained the model
    space/README.md         the Space's card: sdk gradio at the version installed here, app_file app.py
"""

import json
import shutil
from importlib import metadata
from pathlib import Path

from gpt2_owt.core.errors import UserError

APP = Path(__file__).parents[1] / "tracing" / "space" / "app.py"
FOLDER = "space"


def space_files(repo_id: str, code_url: str | None, git_commit: str | None) -> dict[str, str]:
    """name -> text of every file of the Space but app.py; one UserError when it cannot pin its code."""
    if not code_url:
        raise UserError("--with_space needs --code_url: the public git URL of this code, which the Space installs "
                        "at the run's commit")
    if not git_commit:
        raise UserError("--with_space: the run recorded no git commit (trained outside a git checkout), so the "
                        "Space cannot install the code that trained it")
    try:
        gradio_version = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        raise UserError("--with_space needs gradio installed (pip install 'gpt2-owt[explore]'): the Space runs the "
                        "gradio version the explorer was run with here") from None
    name = repo_id.split("/")[-1]
    readme = f"""---
title: {name} trace explorer
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
python_version: "3.11"
models:
- {repo_id}
---

The trace explorer of [{repo_id}](https://huggingface.co/{repo_id}) (`gpt2-owt explore --repo_id {repo_id}`): pick a
checkpoint (its `stepN` branches), generate, and follow a text's loss over training. Spans found in the training data,
their exposures and the data order need the prepared data with its trace index: set the Space variable
`GPT2_OWT_DATA_DIR` to that folder (e.g. on persistent storage `/data`).
"""
    requirements = (f"# gpt2-owt at the commit that trained {repo_id}, with the explorer (gradio) and the trace index\n"
                    f"gpt2-owt[explore,trace] @ git+{code_url}@{git_commit}\n")
    settings = json.dumps({"repo_id": repo_id, "data_dir": None}, indent=2) + "\n"
    return {"README.md": readme, "requirements.txt": requirements, "space.json": settings}


def write_space(folder: Path, files: dict[str, str]) -> None:
    """Write the Space into `folder` (inside the release being built)."""
    folder.mkdir()
    shutil.copyfile(APP, folder / APP.name)
    for name, text in files.items():
        (folder / name).write_text(text)
