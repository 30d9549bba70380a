"""The checkpoints of a training run, listed once for every reader: a run's exports (RUN/hf/stepN and RUN/hf/final)
or a Hub release (its stepN branches and main).

    run_checkpoints("runs/r1")            # or "runs/r1/hf": step0, step1, ..., final (step 200), sorted by step
    hub_checkpoints("user/gpt2-owt")      # step0, step1, ... (branches), main (step 200)
    select_checkpoint(found, "step200")   # the last step by its number, whether or not it has a stepN of its own
    distinct_steps(found)                 # one checkpoint per step: stepN preferred over the final copy of it
    checkpoint_folder(found[-1])          # a local from_pretrained folder (a Hub revision is downloaded)

A checkpoint's step comes from its export_info.json (a run export, or a branch uploaded from one) or from
release_manifest.json (a release built by `gpt2-owt card`, on main), else from its name (`stepN`, core/steps.py).
The last step of a run is always exported as hf/final (and on the Hub it is main), and also as hf/stepN only when N
is an export step: so `step N` is looked up by number, never by folder name. The eval series, `trace curve`,
`trace spans`, `trace memorization` and modeling/interp.py all list checkpoints through this module.
Torch-free; huggingface_hub is imported only for a Hub repo.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from gpt2_owt.core.errors import UserError, first_line
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.records import sha256_file
from gpt2_owt.core.steps import parse_step_name, step_name

from .hf_folder import EXPORT_INFO, GENERATION_CONFIG, MODEL_CONFIG, WEIGHTS
from .tokenizer import TOKENIZER_FILES

HF_EXPORTS = "hf"  # RUN/hf/: the trainer's from_pretrained exports (training/run_dir.py's layout)
FINAL = "final"  # RUN/hf/final: the export at the end of training
MAIN = "main"  # a Hub release's default branch: the final checkpoint
RELEASE_MANIFEST = "release_manifest.json"  # {"step", "tokens", ...} of a release folder (model_card/release_dir.py)
FINAL_NAMES = (FINAL, MAIN)
# What a from_pretrained load needs from a Hub revision: never the optimizer state that may share the branch.
MODEL_FILES = [MODEL_CONFIG, GENERATION_CONFIG, WEIGHTS, EXPORT_INFO, *TOKENIZER_FILES]
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Checkpoint:
    name: str  # stepN or final (a run's hf/ folder); stepN or main (a Hub repo)
    model: str  # the local folder, or the Hub repo id
    revision: str | None  # the Hub branch; None for a local folder
    step: int | None  # updates the weights have trained on (None: a main branch that does not say)
    tokens: int | None
    weights_sha256: str | None = None  # only when listed with hash_weights=True

    @property
    def label(self) -> str:
        """How reports name it: hf/stepN, hf/final (a run) or the branch (a Hub repo)."""
        return self.name if self.revision else f"{HF_EXPORTS}/{self.name}"

    def from_pretrained_kwargs(self) -> dict:
        return {"pretrained_model_name_or_path": self.model, "revision": self.revision}


def _order(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """By step; final/main after a stepN of the same step (and last when its step is unknown)."""
    return sorted(checkpoints, key=lambda c: (c.step is None, c.step or 0, c.name in FINAL_NAMES, c.name))


def exports_dir(run_or_hf_dir: str | Path) -> Path:
    """RUN/hf for a run folder; the folder itself when it is already an hf/ folder of exports."""
    path = Path(run_or_hf_dir).expanduser()
    return path / HF_EXPORTS if (path / HF_EXPORTS).is_dir() else path


def run_checkpoints(run_or_hf_dir: str | Path, hash_weights: bool = False) -> list[Checkpoint]:
    """Every `stepN` and `final` export of a run (its folder or its hf/ folder), sorted by step; each must have its
    weights. `hash_weights` computes each model.safetensors' sha256 (the eval series keys its resume on it)."""
    folder = exports_dir(run_or_hf_dir)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder {folder} does not exist")
    found = [p for p in sorted(folder.iterdir()) if p.is_dir() and (parse_step_name(p.name) is not None
                                                                     or p.name == FINAL)]
    if not found:
        raise UserError(f"no checkpoints (stepN or final folders) found in {folder}")
    missing = [p.name for p in found if not (p / WEIGHTS).is_file()]
    if missing:
        raise UserError(f"checkpoint folder(s) {', '.join(missing)} in {folder} have no {WEIGHTS}")
    if hash_weights:
        from tqdm.auto import tqdm

        found = tqdm(found, desc="hash checkpoints", unit="checkpoint", leave=False)
    checkpoints = []
    for path in found:
        info = read_json(path / EXPORT_INFO) if (path / EXPORT_INFO).is_file() else {}
        checkpoints.append(Checkpoint(path.name, str(path.resolve()), None, info.get("step", parse_step_name(path.name)),
                                      info.get("tokens"), sha256_file(path / WEIGHTS) if hash_weights else None))
    return _order(checkpoints)


def _hub_json(repo_id: str, revision: str, filename: str) -> dict:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return read_json(hf_hub_download(repo_id, filename, revision=revision))
    except EntryNotFoundError:
        return {}


def _hub_weights_sha256(api, repo_id: str, revision: str) -> str:
    """The LFS sha256 the Hub stores for model.safetensors (= sha256 of the file); downloads only if not LFS."""
    from huggingface_hub import hf_hub_download

    infos = api.get_paths_info(repo_id, [WEIGHTS], revision=revision)
    if not infos:
        raise UserError(f"{repo_id} revision {revision} has no {WEIGHTS}")
    lfs = getattr(infos[0], "lfs", None)
    return lfs.sha256 if lfs else sha256_file(hf_hub_download(repo_id, WEIGHTS, revision=revision))


def hub_checkpoints(repo_id: str, revisions: str | list[str] = "all", hash_weights: bool = False) -> list[Checkpoint]:
    """`all`: every `stepN` branch and main; or the named branches/tags (a list or comma-separated). Each one's step
    and tokens are read from its export_info.json / release_manifest.json (main's always: the final step is
    addressable by its number); `hash_weights` adds each revision's weights sha256 (from the Hub's LFS record)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    from gpt2_owt.core.hub import repo_refs

    refs = repo_refs(repo_id)
    steps = sorted((b for b in refs if parse_step_name(b) is not None), key=parse_step_name)
    if revisions == "all" or revisions == ["all"]:
        wanted = steps + [MAIN] * (MAIN in refs)
    else:
        names = revisions.split(",") if isinstance(revisions, str) else revisions
        wanted = list(dict.fromkeys(r.strip() for r in names if r.strip()))
        unknown = [r for r in wanted if r not in refs]
        if unknown or not wanted:
            raise UserError(f"unknown revision(s) {', '.join(unknown) or repr(revisions)} in {repo_id}; it has "
                            f"{', '.join([MAIN] * (MAIN in refs) + steps) or 'no branches'}")
    if not wanted:
        raise UserError(f"no checkpoints (stepN branches or main) found in {repo_id}")
    api = HfApi()
    checkpoints = []
    try:
        for rev in wanted:
            step, tokens = parse_step_name(rev), None
            if hash_weights or step is None:  # a branch's name is its step; main's step is in its metadata
                info = _hub_json(repo_id, rev, EXPORT_INFO) or _hub_json(repo_id, rev, RELEASE_MANIFEST)
                step, tokens = info.get("step", step), info.get("tokens")
            sha = _hub_weights_sha256(api, repo_id, rev) if hash_weights else None
            checkpoints.append(Checkpoint(rev, repo_id, rev, step, tokens, sha))
    except RepositoryNotFoundError:
        raise UserError(f"Hub repo {repo_id} not found (or not accessible with your token)") from None
    except HfHubHTTPError as e:
        raise UserError(f"cannot list the checkpoints of {repo_id}: {first_line(e)}") from None
    return _order(checkpoints)


def is_hub_id(source: str | Path) -> bool:
    """A `user/name` that is not a local path."""
    return not Path(source).expanduser().exists() and bool(REPO_ID.match(str(source)))


def list_checkpoints(source: str | Path, hash_weights: bool = False) -> list[Checkpoint]:
    """A run folder (or its hf/ folder), or a Hub repo id."""
    return hub_checkpoints(str(source), hash_weights=hash_weights) if is_hub_id(source) else \
        run_checkpoints(source, hash_weights)


def distinct_steps(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """One checkpoint per step, by step (stepN kept over final/main of the same weights); unknown steps dropped."""
    by_step: dict[int, Checkpoint] = {}
    for c in checkpoints:  # _order puts stepN before final/main of the same step
        if c.step is not None:
            by_step.setdefault(c.step, c)
    return [by_step[s] for s in sorted(by_step)]


def available(checkpoints: list[Checkpoint]) -> str:
    """`step0, step1, ..., step200 (final)`: for error messages."""
    return ", ".join(step_name(c.step) + (f" ({c.name})" if c.name in FINAL_NAMES else "")
                     for c in distinct_steps(checkpoints)) or "none"


def select_checkpoint(checkpoints: list[Checkpoint], which: str | int, where: str = "") -> Checkpoint:
    """`stepN` (or N): the checkpoint of step N, whatever its folder or branch is called; `final` / `main`: the
    last one. One UserError naming what exists otherwise."""
    if str(which) in FINAL_NAMES:
        finals = [c for c in checkpoints if c.name in FINAL_NAMES]
        if finals:
            return finals[-1]
        raise UserError(f"{where or 'the series'} has no {which} checkpoint; available: {available(checkpoints)}")
    step = int(which) if isinstance(which, int) or str(which).isdigit() else parse_step_name(str(which))
    if step is None:
        raise UserError(f"checkpoint {which!r}: expected stepN, N or final")
    for c in distinct_steps(checkpoints):
        if c.step == step:
            return c
    raise UserError(f"{where or 'the series'} has no checkpoint of step {step}; available: {available(checkpoints)}")


def checkpoint_folder(checkpoint: Checkpoint) -> Path:
    """A local from_pretrained folder of the checkpoint: its own folder, or its Hub revision downloaded (model files
    only, not an optimizer state on the same branch)."""
    if checkpoint.revision is None:
        return Path(checkpoint.model)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(checkpoint.model, revision=checkpoint.revision, allow_patterns=MODEL_FILES))
    except HfHubHTTPError as e:
        raise UserError(f"cannot download {checkpoint.model} revision {checkpoint.revision}: {first_line(e)}") from None


def load_checkpoint(checkpoint: Checkpoint):
    """The checkpoint as an fp32 `GPT2LMHeadModel` in eval mode (modeling/hf_folder.load_hf_model: one-line errors
    for a damaged folder). Imports torch."""
    from .hf_folder import load_hf_model

    return load_hf_model(checkpoint_folder(checkpoint))
