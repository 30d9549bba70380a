"""Check a published checkpoint series against its own records, trusting neither the card nor the upload.

    gpt2-owt verify --repo_id user/gpt2-owt [--revision main] [--data_dir DATA]
    gpt2-owt verify RELEASE_DIR [--branches_dir DIR] [--data_dir DATA]
    gpt2-owt-verify-release ...

One line per check (PASS / FAIL / SKIP), exit 1 if any check fails (2 for bad input such as an unknown repo):

- manifest     checkpoints.json (written by upload.py) is on the release branch and lists the release itself
- weights      every branch's model.safetensors has the sha256 checkpoints.json lists; every `step*` branch is listed
- distinct     no two steps hold the same weights (Pythia #205/#206: step branches serving the final model)
- step0        step 0 is bitwise a fresh init (modeling.build_model, CPU) from the recorded config and init_seed
- files        each step's config and tokenizer files are byte-identical to the release branch's
- card         the card's hyperparameter table equals training_config.json, field for field
- data         sha256 of manifest.json = checkpoints.json's data_manifest_sha256 = the card's (the run's record)
- data_order   with --data_dir: that folder is the recorded data, and training/data_order.py's sampler reproduces
               every batch hash of a published fed_batches.jsonl

On the Hub it downloads only small files: checkpoints.json, README.md, training_config.json, manifest.json, step 0's
config.json (and fed_batches.jsonl with --data_dir). Weights hashes come from the Hub's file metadata (the LFS
sha256 of `list_repo_tree`), so no weights are downloaded, except step 0's model.safetensors when a fresh init,
saved here, is not byte-identical to it (then its tensors are compared one by one). Start-up imports no torch;
the step-0 and data-order checks import it when they run.

RELEASE_DIR is a local copy of the release branch (e.g. `hf download ID --local-dir DIR`); step branch `stepN` is
looked up in --branches_dir as `stepN/` (one `hf download --revision stepN` each) or `stepN/` (a run's `hf/`).
A release built locally by `gpt2-owt card` and never uploaded has no checkpoints.json: verify then derives the list
from its release_manifest.json and each branch's export_info.json (the records written with the weights), offline.
Every file another stage wrote is read through core/readers.py and checkpoints.json is schema-checked
(checkpoint_manifest.parse: types, every key, tokens = step x tokens per step): a damaged file is one line, exit 2.
"""

import contextlib
import json
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.hub import hub_errors
from gpt2_owt.core.readers import DamagedFile, read_json, read_jsonl
from gpt2_owt.core.records import sha256_file
from gpt2_owt.core.steps import parse_step_name
from gpt2_owt.model_card import checkpoint_manifest as cm
from gpt2_owt.model_card.facts import fmt
from gpt2_owt.model_card.release_dir import RELEASE_MANIFEST, TRAINING_CONFIG, manifest_differences
from gpt2_owt.modeling.hf_folder import EXPORT_INFO
from gpt2_owt.training.run_dir import FED_BATCHES

HPARAM_ROW = re.compile(r"^\| `([^`]+)` \| (.*) \|$")
CARD_MANIFEST_SHA = re.compile(r"Data manifest SHA-256:\*\* `([0-9a-f]{64})`")


@dataclass
class VerifyArgs:
    release_dir: str | None = field(default=None, metadata={"help": "local copy of the release branch"})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo to verify, e.g. user/gpt2-owt"})
    revision: str = field(default="main", metadata={"help": "release branch (or tag) on the Hub"})
    branches_dir: str | None = field(default=None, metadata={"help": "local mode: folder of stepN/ or stepN/"})
    data_dir: str | None = field(default=None, metadata={"help": "prepared data folder: also check the data order"})


@dataclass
class FileInfo:
    sha256: str | None  # content sha256 when known without downloading (LFS files on the Hub, every local file)
    oid: str  # git blob id on the Hub; sha256 locally: equal files have equal oids within one source


# -- where the files come from ---------------------------------------------------------------------------------------
class HubSource:
    """A repo on the Hub (HF_ENDPOINT): metadata from list_repo_refs / list_repo_tree, small files downloaded."""

    def __init__(self, repo_id: str, revision: str):
        from huggingface_hub import HfApi

        self.api, self.repo_id, self.release = HfApi(), repo_id, revision
        self.cache = Path(tempfile.mkdtemp(prefix="gpt2-owt-verify-"))
        self.downloaded: list[str] = []
        refs = self.api.list_repo_refs(repo_id)
        self.branches = sorted(b.name for b in refs.branches)
        self._trees: dict[str, dict[str, FileInfo]] = {}

    def files(self, branch: str) -> dict[str, FileInfo] | None:
        if branch not in self._trees:
            if branch not in self.branches and branch != self.release:
                return None
            tree = self.api.list_repo_tree(self.repo_id, revision=branch, recursive=True, expand=True)
            self._trees[branch] = {f.path: FileInfo(f.lfs.sha256 if f.lfs else None, f.blob_id)
                                   for f in tree if hasattr(f, "blob_id")}
        return self._trees[branch]

    def path(self, branch: str, name: str) -> Path:
        from huggingface_hub import hf_hub_download

        self.downloaded.append(f"{branch}:{name}")
        return Path(hf_hub_download(self.repo_id, name, revision=branch, cache_dir=self.cache))


class LocalSource:
    """A local copy of the release branch, plus step branches from --branches_dir."""

    def __init__(self, release_dir: Path, branches_dir: Path | None):
        if not release_dir.is_dir():
            raise UserError(f"release folder not found: {release_dir}")
        self.release, self.downloaded = "main", []
        self.folders = {self.release: release_dir}
        if branches_dir is not None:
            if not branches_dir.is_dir():
                raise UserError(f"--branches_dir not found: {branches_dir}")
            for p in sorted(branches_dir.iterdir()):
                if parse_step_name(p.name) is not None and p.is_dir():
                    self.folders[p.name] = p
        self.branches = sorted(self.folders)

    def files(self, branch: str) -> dict[str, FileInfo] | None:
        folder = self.folders.get(branch)
        if folder is None:
            return None
        out = {}
        for p in sorted(folder.rglob("*")):
            if p.is_file() and ".cache" not in p.parts:
                sha = sha256_file(p)
                out[p.relative_to(folder).as_posix()] = FileInfo(sha, sha)
        return out

    def path(self, branch: str, name: str) -> Path:
        return self.folders[branch] / name


# -- checks ------------------------------------------------------------------------------------------------------
class Report:
    def __init__(self):
        self.failed = []

    def line(self, status: str, check: str, detail: str) -> None:
        if status == "FAIL":
            self.failed.append(check)
        print(f"{status:4}  {check}: {detail}", flush=True)


def read_json_file(source, branch: str, name: str, expect: type = dict):
    """A JSON file of a branch, through the one reader: damaged is one line naming the file."""
    try:
        path = source.path(branch, name)
    except UserError:
        raise
    except Exception as e:  # a missing file: OSError locally, EntryNotFoundError on the Hub
        raise UserError(f"cannot read {name} on {branch}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return read_json(path, f"{name} on {branch}", expect=expect)


def derived_manifest(source) -> dict:
    """What checkpoints.json would list for a local release built by `gpt2-owt card` that was never uploaded (no
    checkpoints.json): the release from its release_manifest.json, each stepN of --branches_dir from its
    export_info.json (the trainer's record of its weights), the data order from training_config.json and
    manifest.json. Every hash is a record written when the weights were, so the checks below still compare them
    with the files."""
    release = checked_record(read_json_file(source, source.release, RELEASE_MANIFEST),
                             f"{RELEASE_MANIFEST} on {source.release}")
    entries = [cm.checkpoint_entry(source.release, release.get("step"), release.get("tokens"),
                                   source.path(source.release, cm.WEIGHTS), release.get("weights_sha256"), None)]
    for branch in source.branches:
        files = source.files(branch) or {}
        if branch == source.release or cm.WEIGHTS not in files:
            continue
        info = checked_record(read_json_file(source, branch, EXPORT_INFO), f"{EXPORT_INFO} on {branch}") \
            if EXPORT_INFO in files else {}
        entries.append(cm.checkpoint_entry(branch, info.get("step", parse_step_name(branch)), info.get("tokens"),
                                           source.path(branch, cm.WEIGHTS), info.get("weights_sha256"), None))
    data_manifest = source.path(source.release, "manifest.json")
    order = cm.data_order_identity(read_json_file(source, source.release, TRAINING_CONFIG),
                                   sha256_file(data_manifest) if data_manifest.is_file() else None)
    return json.loads(cm.render("(local)", source.release, order, entries))


def checked_record(record: dict, what: str) -> dict:
    """A record the derived checkpoint list is built from (release_manifest.json, export_info.json) with the keys it
    takes from it: a wrong one is that file's damage, named as such (not a checkpoints.json the user never had)."""
    for key, kind in (("step", int), ("tokens", int), ("weights_sha256", str)):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise DamagedFile(f"{what} is damaged ({key} {value!r}, expected {kind.__name__})")
    return record


def check_weights(source, manifest: dict, report: Report) -> dict[str, str | None]:
    """sha256 of every listed branch's weights as the source reports them (None = missing)."""
    actual, bad = {}, []
    for entry in manifest["checkpoints"]:
        files = source.files(entry["branch"])
        info = (files or {}).get(cm.WEIGHTS)
        actual[entry["branch"]] = info.sha256 if info else None
        if files is None:
            bad.append(f"branch {entry['branch']} is missing")
        elif info is None:
            bad.append(f"{entry['branch']} has no {cm.WEIGHTS}")
        elif info.sha256 != entry["weights_sha256"]:
            bad.append(f"{entry['branch']} holds weights sha256 {str(info.sha256)[:16]}…, checkpoints.json lists "
                       f"{entry['weights_sha256'][:16]}…")
    listed = {e["branch"] for e in manifest["checkpoints"]}
    bad += [f"branch {b} is not listed in {cm.CHECKPOINTS_JSON}" for b in source.branches
            if parse_step_name(b) is not None and b not in listed]
    if bad:
        report.line("FAIL", "weights", "; ".join(bad))
    else:
        report.line("PASS", "weights", f"{len(actual)} branches hold exactly the weights {cm.CHECKPOINTS_JSON} lists")
    return actual


def check_distinct(manifest: dict, actual: dict[str, str | None], report: Report) -> None:
    """Two different steps with equal weights: listed or served (the final step may also have a step branch)."""
    clashes = []
    for kind, sha_of in (("listed", lambda e: e["weights_sha256"]), ("served", lambda e: actual.get(e["branch"]))):
        seen: dict[str, dict] = {}
        for entry in manifest["checkpoints"]:
            sha = sha_of(entry)
            if sha is None:
                continue
            other = seen.setdefault(sha, entry)
            if other is not entry and other["step"] != entry["step"]:
                clashes.append(f"{other['branch']} (step {other['step']}) and {entry['branch']} (step "
                               f"{entry['step']}) {kind} with the same weights {sha[:16]}…")
    if clashes:
        report.line("FAIL", "distinct", "; ".join(dict.fromkeys(clashes)))
    else:
        report.line("PASS", "distinct", f"{len({e['step'] for e in manifest['checkpoints']})} steps, all different weights")


def check_step0(source, manifest: dict, training_config: dict, actual: dict, report: Report) -> None:
    entry = next((e for e in manifest["checkpoints"] if e["step"] == 0), None)
    if entry is None:
        return report.line("SKIP", "step0", "no step 0 published")
    seed = training_config.get("init_seed", training_config.get("seed"))
    recorded = manifest.get("data_order", {}).get("init_seed")
    if recorded is not None and recorded != seed:
        return report.line("FAIL", "step0", f"training_config.json init_seed {seed} but {cm.CHECKPOINTS_JSON} "
                                            f"records {recorded}")
    branch = entry["branch"]
    if actual.get(branch) is None:
        return report.line("FAIL", "step0", f"{branch} serves no {cm.WEIGHTS}")
    import torch
    from safetensors.torch import load_file
    from transformers import GPT2Config

    from gpt2_owt.modeling.model import build_model

    config = GPT2Config.from_pretrained(source.path(branch, "config.json").parent)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = build_model(config, seed=seed)
        fresh.save_pretrained(tmp)
        fresh_sha = sha256_file(Path(tmp) / cm.WEIGHTS)
        if fresh_sha == actual.get(branch):
            return report.line("PASS", "step0", f"{branch} is byte-identical to a fresh init with init_seed {seed}")
        ours = load_file(str(Path(tmp) / cm.WEIGHTS))
    try:
        theirs = load_file(str(source.path(branch, cm.WEIGHTS)))
    except Exception as e:  # missing / unreadable weights
        return report.line("FAIL", "step0", f"cannot load {branch}/{cm.WEIGHTS}: {type(e).__name__}")
    differ = sorted(set(ours) ^ set(theirs)) + [n for n in sorted(set(ours) & set(theirs))
                                                 if not torch.equal(ours[n].to(theirs[n].dtype), theirs[n])]
    if differ:
        return report.line("FAIL", "step0", f"{branch} is not the init of init_seed {seed}: {len(differ)} tensors "
                                            f"differ ({', '.join(differ[:3])}{', …' if len(differ) > 3 else ''})")
    report.line("PASS", "step0", f"{branch} equals a fresh init with init_seed {seed} tensor by tensor "
                                 "(the file's bytes differ only in serialization)")


def check_files(source, manifest: dict, report: Report) -> None:
    main = source.files(source.release) or {}
    shared = [name for name in cm.SHARED_FILES if name in main]
    bad = release_manifest_problems(source, main)
    for entry in manifest["checkpoints"]:
        files = source.files(entry["branch"])
        if files is None or entry["branch"] == source.release:
            continue
        for name in shared:
            if name not in files:
                bad.append(f"{entry['branch']} has no {name}")
            elif files[name].oid != main[name].oid:
                bad.append(f"{entry['branch']}/{name} differs from {source.release}'s")
    if bad:
        report.line("FAIL", "files", "; ".join(bad))
    else:
        report.line("PASS", "files", f"{', '.join(shared)} identical on every branch"
                    + (f"; every file {RELEASE_MANIFEST} lists is on {source.release}" if RELEASE_MANIFEST in main
                       else ""))


def release_manifest_problems(source, main: dict[str, FileInfo]) -> list[str]:
    """What the release branch lacks or changed of the files its release_manifest.json (written by `gpt2-owt card`
    over every file it built) lists, by the comparison upload.py makes before publishing. Files the release gained
    later (checkpoints.json, training_logs/) are not its business; a file it lost or changed is."""
    if RELEASE_MANIFEST not in main:
        return []
    recorded = read_json_file(source, source.release, RELEASE_MANIFEST).get("files")
    if not isinstance(recorded, dict):
        raise UserError(f"{RELEASE_MANIFEST} on {source.release} is damaged (no 'files' table)")
    _, missing, changed = manifest_differences(recorded, {name: info.sha256 for name, info in main.items()})
    return ([f"{source.release} has no {name} ({RELEASE_MANIFEST} lists it)" for name in missing]
            + [f"{source.release}/{name} differs from the sha256 {RELEASE_MANIFEST} records" for name in changed])


def card_hyperparameters(card: str) -> dict[str, str]:
    section = card.split("#### Training Hyperparameters", 1)[-1].split("\n#", 1)[0]
    return {m.group(1): m.group(2) for m in map(HPARAM_ROW.match, section.splitlines()) if m}


def read_card(source) -> str | None:
    """The model card (README.md) of the release branch; None when it has none (the card and data checks then fail
    naming it, instead of the whole command stopping on a FileNotFoundError)."""
    if "README.md" not in (source.files(source.release) or {}):
        return None
    try:
        return source.path(source.release, "README.md").read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"README.md on {source.release} is damaged (not UTF-8 text)") from None


def check_card(card: str | None, training_config: dict, report: Report) -> None:
    if card is None:
        return report.line("FAIL", "card", "the release has no README.md (the model card)")
    shown = card_hyperparameters(card)
    want = {key: fmt(value) for key, value in training_config.items()}
    bad = [f"{k}: card {shown.get(k, '(missing)')!r}, training_config.json {v!r}" for k, v in want.items()
           if shown.get(k) != v] + [f"{k}: on the card only" for k in shown if k not in want]
    if bad:
        report.line("FAIL", "card", "hyperparameter table differs from training_config.json: " + "; ".join(bad[:5]))
    else:
        report.line("PASS", "card", f"hyperparameter table = training_config.json ({len(want)} fields)")


def check_data(source, manifest: dict, card: str | None, report: Report) -> str | None:
    recorded = manifest.get("data_order", {}).get("data_manifest_sha256")
    main = source.files(source.release) or {}
    if "manifest.json" not in main:
        report.line("FAIL", "data", f"no manifest.json on {source.release}")
        return recorded
    actual = sha256_file(source.path(source.release, "manifest.json"))
    m = CARD_MANIFEST_SHA.search(card or "")
    on_card = m.group(1) if m else None
    if actual == recorded == on_card:
        report.line("PASS", "data", f"manifest.json sha256 {actual[:16]}… = the run's record (card, {cm.CHECKPOINTS_JSON})")
    else:
        report.line("FAIL", "data", f"manifest.json sha256 {actual[:16]}…, {cm.CHECKPOINTS_JSON} records "
                                    f"{str(recorded)[:16]}…, the card {str(on_card)[:16]}…")
    return recorded


def check_data_order(source, manifest: dict, recorded: str | None, data_dir: str | None, report: Report) -> None:
    if data_dir is None:
        return report.line("SKIP", "data_order", "give --data_dir to replay the data order")
    if not (Path(data_dir) / "manifest.json").is_file():
        raise UserError(f"--data_dir {data_dir} has no manifest.json (a training/prepare_data.py folder?)")
    if sha256_file(Path(data_dir) / "manifest.json") != recorded:
        return report.line("FAIL", "data_order", f"{data_dir}/manifest.json is not the data this run recorded")
    traces = [name for name in (source.files(source.release) or {}) if name.endswith(FED_BATCHES)]
    if not traces:
        return report.line("SKIP", "data_order", "--data_dir is the recorded data; no fed_batches.jsonl published")
    from tqdm import tqdm

    from gpt2_owt.training.data_dir import WindowSampler, batch_sha256, open_split, read_windows

    order = manifest["data_order"]
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(order, split)
    rows = read_jsonl(source.path(source.release, traces[0]), f"{traces[0]} on {source.release}")
    # The log must record every update the release trained (0..step-1), once: a cut or torn log would otherwise
    # pass on the batches it still holds.
    malformed = [n for n, row in enumerate(rows, 1) if not (isinstance(row.get("update"), int)
                                                           and isinstance(row.get("tokens_sha256"), str))]
    if malformed:
        return report.line("FAIL", "data_order", f"{traces[0]} row {malformed[0]} is not "
                                                 '{"update": int, "tokens_sha256": str}')
    step = next((e["step"] for e in manifest["checkpoints"] if e["branch"] == source.release), None)
    updates = [row["update"] for row in rows]
    if step is not None and sorted(u for u in updates if u < step) != list(range(step)):
        held = sorted(set(updates))
        return report.line("FAIL", "data_order", f"{traces[0]} records {len(held)} distinct updates "
                                                 f"({_span(held)}), the release trained {step} (0..{step - 1}): "
                                                 "the log is incomplete")
    bad = [row["update"] for row in tqdm(rows, desc="replay data order", leave=False)
           if batch_sha256(read_windows(split, sampler.global_batch_windows(row["update"]), order["seq_len"]))
           != row["tokens_sha256"]]
    if bad:
        report.line("FAIL", "data_order", f"{len(bad)} of {len(rows)} batches differ from {traces[0]} "
                                          f"(first at step {bad[0]})")
    else:
        report.line("PASS", "data_order", f"all {len(rows)} batches of {traces[0]} reproduced with data_seed "
                                          f"{order['data_seed']}")


def _span(updates: list[int]) -> str:
    return f"{updates[0]}..{updates[-1]}" if updates else "none"


def verify(source, data_dir: str | None) -> Report:
    report = Report()
    derived = isinstance(source, LocalSource) and cm.CHECKPOINTS_JSON not in (source.files(source.release) or {})
    if derived:
        manifest = cm.parse(derived_manifest(source), f"derived for {source.folders[source.release]}")
    else:
        manifest = cm.parse(read_json_file(source, source.release, cm.CHECKPOINTS_JSON, expect=object),
                            f"on {source.release}")
    release_listed = any(e["branch"] == source.release for e in manifest["checkpoints"])
    what = (f"no {cm.CHECKPOINTS_JSON} (a local release): {len(manifest['checkpoints'])} checkpoints from "
            f"{RELEASE_MANIFEST} and each branch's {EXPORT_INFO}" if derived else
            f"{cm.CHECKPOINTS_JSON} lists {len(manifest['checkpoints'])} checkpoints")
    report.line("PASS" if release_listed else "FAIL", "manifest",
                what + ("" if release_listed else f", but not the release branch {source.release}"))
    training_config = read_json_file(source, source.release, TRAINING_CONFIG)
    card = read_card(source)
    actual = check_weights(source, manifest, report)
    check_distinct(manifest, actual, report)
    check_step0(source, manifest, training_config, actual, report)
    check_files(source, manifest, report)
    check_card(card, training_config, report)
    recorded = check_data(source, manifest, card, report)
    check_data_order(source, manifest, recorded, data_dir, report)
    return report


def parse_args(argv) -> VerifyArgs:
    args = parse(VerifyArgs, argv, "verify", positional="release_dir")
    if (args.release_dir is None) == (args.repo_id is None):
        raise UserError("give a release folder or --repo_id (one of them)")
    return args


def open_source(args: VerifyArgs):
    if args.release_dir:
        return LocalSource(Path(args.release_dir), Path(args.branches_dir) if args.branches_dir else None)
    with hub_errors(args.repo_id, args.revision):
        return HubSource(args.repo_id, args.revision)


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    source = open_source(args)
    with hub_errors(args.repo_id, args.revision) if args.repo_id else contextlib.nullcontext():
        report = verify(source, args.data_dir)
    downloaded = ", ".join(source.downloaded) or "nothing (local)"
    print(f"downloaded: {downloaded}")
    if report.failed:
        print(f"verify: FAILED ({', '.join(report.failed)})", file=sys.stderr)
        raise SystemExit(1)
    print("verify: all checks passed")
    return 0


if __name__ == "__main__":
    main()
