"""Publish a release folder and intermediate checkpoints to the Hugging Face Hub (issue #6).

    gpt2-owt-upload RELEASE --repo_id user/name [--private] [--revision main] [--create_pr] [--tag v1.0]
                    [--checkpoints RUN/hf] [--with_training_logs RUN] [--dry_run]

1. `create_repo(exist_ok=True)`; the release folder goes to `--revision` (default `main`) with `upload_folder`.
2. Every `RUN/hf/stepN` export goes to its own branch `step{N}` (the Pythia convention), created from the repo's
   initial commit so it holds only that checkpoint. Each branch's weights are checked by sha256 before upload: a
   step that carries the release's (or another step's) weights is refused, never published.
3. `checkpoints.json` (model_card/checkpoint_manifest.py) goes to the release branch: every published step and the
   release, with branch, step, tokens, weights sha256, per-tensor sha256, the commit that published them and the
   data-order identity (seeds, seq_len, global batch, data manifest sha256). `gpt2-owt verify
   --repo_id ID` checks a download against it.
4. `--with_optimizer_states`: each kept Accelerate checkpoint `RUN/checkpoints/stepN` of a published step goes to
   `checkpoints/stepN/` on branch `step{N}` (the final step's, when it has no step branch, on the release branch);
   `--resume_from_checkpoint` on a downloaded copy continues the run exactly like a local resume.
5. `--with_training_logs RUN` also commits the run's metrics.jsonl, fed_batches.jsonl (if traced) and
   sequence_losses/ to the release branch under training_logs/ (what `gpt2-owt trace` reads).
6. `--tag` tags the release branch once everything above is on it.

Rerunning after a failure resumes: files whose remote sha256 (LFS) / git oid already match are skipped by
`upload_folder`, LFS objects already stored are not sent again, and a step branch whose weights already match is
skipped whole. `--dry_run` needs no token and prints each branch and tag it would write with its file count and size
(`--verbose`: every file).

The token comes from `HF_TOKEN` or the login store (`hf auth login`) via `huggingface_hub.get_token()`; it is never
printed, logged or put in an error message. This module needs only huggingface_hub and the folders: it imports
no torch/transformers (the layouts come from the torch-free training/run_dir.py and model_card/release_dir.py).
"""

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.hub import get_token, hub_errors
from gpt2_owt.core.readers import read_json, read_jsonl
from gpt2_owt.core.records import sha256_file
from gpt2_owt.core.steps import step_name
from gpt2_owt.model_card import checkpoint_manifest as cm
from gpt2_owt.model_card.release_dir import (DATA_MANIFEST, EXPORT_REQUIRED, RELEASE_MANIFEST, REQUIRED_FILES,
                                             TRAINING_CONFIG, manifest_differences)
from gpt2_owt.modeling.hf_folder import EXPORT_INFO, WEIGHTS
from gpt2_owt.training.run_dir import (CHECKPOINT_INFO, CHECKPOINTS, FED_BATCHES, HF_EXPORTS, METRICS, RUN_INFO,
                                       SEQUENCE_LOSSES, list_step_dirs)

RELEASE_TITLE, STEP_TITLE = "Release (", "Checkpoint step "  # commit titles; checkpoints.json records those commits


class UploadError(UserError):
    """A problem the user can fix; printed as one `error:` line (never containing the token)."""


@dataclass
class UploadArgs:
    repo_id: str = field(metadata={"help": "Hub repo to publish to, e.g. user/gpt2-owt"})
    release_dir: str | None = field(default=None, metadata={"help": "release folder (or give it as the first argument)"})
    private: bool = field(default=False, metadata={"help": "create the repo as private (if it does not exist yet)"})
    revision: str = field(default="main", metadata={"help": "branch receiving the release"})
    create_pr: bool = field(default=False, metadata={"help": "open a pull request with the release instead of pushing"})
    tag: str | None = field(default=None, metadata={"help": "tag to put on the release commit, e.g. v1.0"})
    checkpoints: str | None = field(default=None, metadata={"help": "RUN/hf: publish each stepN to branch step{N}"})
    with_training_logs: str | None = field(
        default=None, metadata={"help": "RUN: also publish its metrics, fed batches and sequence losses to training_logs/"})
    dry_run: bool = field(default=False, metadata={"help": "print what would be written; no token, no network"})
    verbose: bool = field(default=False, metadata={"help": "with --dry_run: list every file of every branch, not only "
                                                           "each branch's count and size"})
    allow_duplicate_weights: bool = field(
        default=False, metadata={"help": "publish steps whose weights equal another step's (e.g. lr was 0)"})
    with_optimizer_states: bool = field(default=False, metadata={
        "help": "also publish each kept RUN/checkpoints/stepN (optimizer, scheduler, RNG) to checkpoints/stepN/ "
                "on branch step{N}; needs --checkpoints RUN/hf"})


@dataclass
class Target:
    """One folder going to one branch."""

    branch: str
    folder: Path
    files: list[tuple[str, int]]
    weights_sha256: str
    step: int | None
    tokens: int | None = None


def folder_files(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def read_json_if_present(path: Path) -> dict:
    return read_json(path, path.name) if path.is_file() else {}


# -- local checks ---------------------------------------------------------------------------------------------------
def release_target(release: Path, revision: str) -> Target:
    if not release.is_dir():
        raise UploadError(f"release folder not found: {release}")
    missing = [f"{what} ({name})" for what, names in REQUIRED_FILES.items() for name in names
               if not (release / name).is_file()]
    if missing:
        raise UploadError(f"release folder {release} is incomplete: missing {', '.join(missing)} "
                          "(build it with `gpt2-owt card ... --eval_results results.json`)")
    sha = sha256_file(release / WEIGHTS)
    manifest = read_release_manifest(release)
    if manifest.get("weights_sha256") not in (None, sha):
        raise UploadError(f"{release}/{WEIGHTS} has sha256 {sha}, but {RELEASE_MANIFEST} records "
                          f"{manifest['weights_sha256']}: the release was modified after it was built")
    check_release_files(release, manifest["files"])
    return Target(revision, release, folder_files(release), sha, manifest.get("step"), manifest.get("tokens"))


def read_release_manifest(release: Path) -> dict:
    path = release / RELEASE_MANIFEST
    if not path.is_file():
        raise UploadError(f"{path} not found: build the release with `gpt2-owt card`")
    manifest = read_json(path, "release manifest")
    if not isinstance(manifest.get("files"), dict):
        raise UploadError(f"release manifest {path} is damaged (no 'files' table)")
    return manifest


def check_same_run(release: Path, run_dir: Path, flag: str) -> None:
    """`flag`'s run folder is the run the release was built from: the same training_config.json (the card build
    copies it byte for byte) and, in hf/<released checkpoint>, the released weights. Another run's logs or step
    branches published under this release would describe a model it is not."""
    manifest = read_release_manifest(release)
    if sha256_file(run_dir / TRAINING_CONFIG) != sha256_file(release / TRAINING_CONFIG):
        raise UploadError(f"{flag}: {run_dir} is not the run {release} was built from: its {TRAINING_CONFIG} differs "
                          f"from the release's (built from {manifest.get('run_dir')})")
    export = run_dir / HF_EXPORTS / str(manifest.get("checkpoint"))
    recorded = read_json_if_present(export / EXPORT_INFO).get("weights_sha256") if export.is_dir() else None
    if recorded is None and (export / WEIGHTS).is_file():
        recorded = sha256_file(export / WEIGHTS)
    if recorded != manifest.get("weights_sha256"):
        raise UploadError(f"{flag}: {run_dir} is not the run {release} was built from: its {HF_EXPORTS}/"
                          f"{manifest.get('checkpoint')} holds weights sha256 {str(recorded)[:16]}…, the release "
                          f"{str(manifest.get('weights_sha256'))[:16]}…")


def check_release_files(release: Path, recorded: dict) -> None:
    """Every file of the release is the one model_card.build recorded: same names, sizes and sha256."""
    present = {name: sha256_file(release / name) for name, _ in folder_files(release) if name != RELEASE_MANIFEST}
    extra, missing, changed = manifest_differences(recorded, present)
    if extra or missing:
        what = "; ".join(filter(None, [extra and f"not in it: {', '.join(extra)}",
                                       missing and f"missing: {', '.join(missing)}"]))
        raise UploadError(f"{release} does not match its {RELEASE_MANIFEST} ({what}): the release was modified "
                          "after it was built; rebuild it with `gpt2-owt card`")
    resized = [name for name in present if (release / name).stat().st_size
               != (recorded[name] if isinstance(recorded[name], dict) else {}).get("bytes")]
    if changed or resized:
        raise UploadError(f"{release}/{min({*changed, *resized})} differs from the sha256 recorded in "
                          f"{RELEASE_MANIFEST}: the release was modified after it was built; rebuild it with "
                          "`gpt2-owt card`")


def checkpoint_targets(hf_dir: Path) -> list[Target]:
    """Every hf/stepN export, weights hash checked against its export_info.json."""
    if not hf_dir.is_dir():
        raise UploadError(f"--checkpoints folder not found: {hf_dir}")
    targets = []
    for step, path in list_step_dirs(hf_dir):
        missing = [name for name in EXPORT_REQUIRED if not (path / name).is_file()]
        if missing:
            raise UploadError(f"checkpoint export {path} is incomplete: missing {', '.join(missing)}")
        sha = sha256_file(path / WEIGHTS)
        info = read_json_if_present(path / EXPORT_INFO)
        if info.get("weights_sha256") not in (None, sha):
            raise UploadError(f"{path}/{WEIGHTS} has sha256 {sha} but {EXPORT_INFO} records {info['weights_sha256']}")
        if info.get("step") not in (None, step):
            raise UploadError(f"{path} holds step {info['step']} according to {EXPORT_INFO}, not {step}")
        targets.append(Target(step_name(step), path, folder_files(path), sha, step, info.get("tokens")))
    if not targets:
        raise UploadError(f"no stepN exports found in {hf_dir}")
    return sorted(targets, key=lambda t: t.step)


def optimizer_state_targets(hf_dir: Path, release: Target, steps: list[Target]) -> list[Target]:
    """Every complete RUN/checkpoints/stepN of a published step, as a Target for `checkpoints/stepN/` on that step's
    branch (the release branch for the final step when it has no branch of its own). Pruned steps have none."""
    branch_of = {t.step: t.branch for t in steps}
    if release.step is not None:
        branch_of.setdefault(release.step, release.branch)
    targets = []
    for step, path in list_step_dirs(hf_dir.parent / CHECKPOINTS):
        if (path / CHECKPOINT_INFO).is_file() and step in branch_of:
            targets.append(Target(branch_of[step], path, folder_files(path), "", step))
    if not targets:
        raise UploadError(f"--with_optimizer_states: no complete checkpoint of a published step in "
                          f"{hf_dir.parent / CHECKPOINTS} (kept: last keep_last_checkpoints + milestones)")
    return sorted(targets, key=lambda t: t.step)


def state_path(step: int) -> str:
    """Where a step's optimizer state lies on its branch: the run folder's own checkpoints/stepN."""
    return f"{CHECKPOINTS}/{step_name(step)}"


TRAINING_LOGS = "training_logs"
TRAINING_LOG_PATTERNS = [METRICS, FED_BATCHES, f"{SEQUENCE_LOSSES}/*"]


def training_log_files(run_dir: Path) -> list[tuple[str, int]]:
    """The run's training logs (relative name, size) that --with_training_logs publishes."""
    if not (run_dir / METRICS).is_file() or not (run_dir / TRAINING_CONFIG).is_file():
        raise UploadError(f"--with_training_logs {run_dir}: not a run folder (no {METRICS} or {TRAINING_CONFIG})")
    # What `gpt2-owt trace` and verify will read from the Hub is read here first, through the same readers: a damaged
    # log is refused before it is published, not found by whoever downloads it.
    for name in (METRICS, FED_BATCHES):
        read_jsonl(run_dir / name, f"training log {name}")
    if (run_dir / SEQUENCE_LOSSES).is_dir():
        from gpt2_owt.training.sequence_losses import read_sequence_losses

        read_sequence_losses(run_dir)
    return [(name, size) for name, size in folder_files(run_dir)
            if any(fnmatch.fnmatch(name, pattern) for pattern in TRAINING_LOG_PATTERNS)]  # as upload_folder filters


def publish_training_logs(api, args: UploadArgs, branch: str) -> str | None:
    """Commit the training logs under training_logs/ of the release branch; the commit oid (None if not asked)."""
    if not args.with_training_logs:
        return None
    info = api.upload_folder(repo_id=args.repo_id, folder_path=args.with_training_logs, revision=branch,
                             path_in_repo=TRAINING_LOGS, allow_patterns=TRAINING_LOG_PATTERNS,
                             commit_message="Training logs: metrics, fed batches, per-sequence losses")
    print(f"training logs -> {info.commit_url}")
    return info.oid


def check_plan(args: UploadArgs, release: Target, steps: list[Target]) -> None:
    """Refuse branch-name collisions and step branches that would not hold their own weights."""
    names = [t.branch for t in steps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UploadError(f"several exports map to the same branch name: {', '.join(dupes)}")
    if release.branch in names:
        raise UploadError(f"--revision {release.branch} collides with the checkpoint branch of the same name")
    if args.tag is not None and args.tag in names + [release.branch]:
        raise UploadError(f"--tag {args.tag} has the same name as a branch; pick another tag name")
    seen: dict[str, Target] = {}
    for t in steps:
        if t.weights_sha256 == release.weights_sha256 and t.step != release.step:
            raise UploadError(f"{t.folder} (step {t.step}) has the same weights as the release (sha256 "
                              f"{t.weights_sha256[:16]}…): a step branch must hold its own weights, refusing")
        other = seen.get(t.weights_sha256)
        if other is not None and not args.allow_duplicate_weights:
            raise UploadError(f"{t.folder} and {other.folder} have identical weights (sha256 {t.weights_sha256[:16]}…);"
                              " pass --allow_duplicate_weights if that is expected (e.g. lr was 0 at that step)")
        seen[t.weights_sha256] = t


def print_plan(args: UploadArgs, release: Target, steps: list[Target], states: list[Target], root_note: str) -> None:
    print(f"dry run: nothing is uploaded. repo {args.repo_id} (created {'private' if args.private else 'public'} "
          "if missing)")
    for t, note in [(release, "pull request" if args.create_pr else "release")] + [(t, root_note) for t in steps]:
        total = sum(size for _, size in t.files)
        print(f"branch {t.branch} ({note}) <- {t.folder}: {len(t.files)} files, {total:,} bytes, "
              f"weights sha256 {t.weights_sha256}")
        if args.verbose:  # a release with every step branch is hundreds of files: listed only when asked
            for name, size in t.files:
                print(f"  {name}  {size:,} bytes")
    for t in states:
        print(f"branch {t.branch} <- {t.folder} as {state_path(t.step)}/: optimizer state, {len(t.files)} files, "
              f"{sum(size for _, size in t.files):,} bytes")
    print(f"branch {release.branch} <- {cm.CHECKPOINTS_JSON}: {len(steps) + 1} checkpoints (written after the upload)"
          + (" (skipped with --create_pr)" if args.create_pr else ""))
    if args.with_training_logs:
        files = training_log_files(Path(args.with_training_logs))
        print(f"branch {release.branch} {TRAINING_LOGS}/ <- {args.with_training_logs}: {len(files)} files, "
              f"{sum(size for _, size in files):,} bytes")
        if args.verbose:
            for name, size in files:
                print(f"  {TRAINING_LOGS}/{name}  {size:,} bytes")
    if args.tag:
        print(f"tag {args.tag} -> the release commit on {release.branch}"
              + (" (skipped with --create_pr: tag after merging)" if args.create_pr else ""))


# -- Hub side -------------------------------------------------------------------------------------------------------
def remote_weights_sha256(api, repo_id: str, branch: str) -> str | None:
    """sha256 of model.safetensors on `branch` (its LFS oid), or None if the branch has no weights yet."""
    infos = api.get_paths_info(repo_id, [WEIGHTS], revision=branch)
    lfs = infos[0].lfs if infos else None
    return lfs.sha256 if lfs is not None else None


def publish_release(api, args: UploadArgs, release: Target, branches: dict) -> str | None:
    """Upload the release folder; return the commit oid to tag (None for a pull request)."""
    if release.branch not in branches and not args.create_pr:
        api.create_branch(args.repo_id, branch=release.branch, exist_ok=True)
    info = api.upload_folder(
        repo_id=args.repo_id, folder_path=str(release.folder), revision=release.branch, create_pr=args.create_pr,
        commit_message=f"{RELEASE_TITLE}step {release.step}, weights sha256 {release.weights_sha256[:12]})",
    )
    if not args.create_pr and remote_weights_sha256(api, args.repo_id, release.branch) != release.weights_sha256:
        raise UploadError(f"after upload, {release.branch} does not hold {release.folder}/{WEIGHTS}")
    print(f"release -> {info.pr_url or info.commit_url}")
    return None if args.create_pr else info.oid


def publish_step(api, repo_id: str, t: Target, branches: dict, root: str) -> None:
    if t.branch in branches:
        remote = remote_weights_sha256(api, repo_id, t.branch)
        if remote == t.weights_sha256:
            print(f"{t.branch}: up to date (weights sha256 {t.weights_sha256[:12]}), skipped")
            return
        if remote is not None:
            raise UploadError(f"branch {t.branch} already exists on {repo_id} with other weights (sha256 "
                              f"{remote[:16]}…); delete it or publish to a new repo")
    else:
        api.create_branch(repo_id, branch=t.branch, revision=root, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(t.folder), revision=t.branch,
                      commit_message=f"{STEP_TITLE}{t.step} (weights sha256 {t.weights_sha256[:12]})")
    if remote_weights_sha256(api, repo_id, t.branch) != t.weights_sha256:
        raise UploadError(f"after upload, branch {t.branch} does not hold {t.folder}/{WEIGHTS}")
    print(f"{t.branch}: uploaded from {t.folder}")


def publish_optimizer_state(api, repo_id: str, t: Target) -> None:
    """upload_folder skips files already there, so a rerun resumes; a state with nothing new makes no commit."""
    total = sum(size for _, size in t.files)
    api.upload_folder(repo_id=repo_id, folder_path=str(t.folder), path_in_repo=state_path(t.step), revision=t.branch,
                      commit_message=f"Optimizer state step {t.step} ({total:,} bytes)")
    print(f"{t.branch}: optimizer state {state_path(t.step)}/ ({len(t.files)} files, {total:,} bytes)")


def published_commit(api, repo_id: str, branch: str, title: str) -> str | None:
    """The newest commit on `branch` that published its weights (stable across reruns and later state uploads)."""
    return next((c.commit_id for c in api.list_repo_commits(repo_id, revision=branch) if c.title.startswith(title)),
                None)


def data_manifest_sha256(args: UploadArgs, release: Target) -> str | None:
    """The data manifest hash the run recorded (run_info.json next to RUN/hf), else the release's manifest.json's."""
    run_info = read_json_if_present(Path(args.checkpoints).parent / RUN_INFO) if args.checkpoints else {}
    if run_info.get("data_manifest_sha256"):
        return run_info["data_manifest_sha256"]
    manifest = release.folder / DATA_MANIFEST
    return sha256_file(manifest) if manifest.is_file() else None


def publish_checkpoints_json(api, args: UploadArgs, release: Target, steps: list[Target],
                             states: list[Target]) -> None:
    state_of = {(t.branch, t.step): {"path": f"{state_path(t.step)}/", "files": len(t.files),
                                     "bytes": sum(size for _, size in t.files)} for t in states}
    entries = []
    for t, title in [(release, RELEASE_TITLE)] + [(t, STEP_TITLE) for t in steps]:
        commit = published_commit(api, args.repo_id, t.branch, title)
        entries.append(cm.checkpoint_entry(t.branch, t.step, t.tokens, t.folder / WEIGHTS, t.weights_sha256, commit,
                                           state_of.get((t.branch, t.step))))
    data_order = cm.data_order_identity(read_json_if_present(release.folder / TRAINING_CONFIG),
                                        data_manifest_sha256(args, release))
    content = cm.render(args.repo_id, release.branch, data_order, entries)
    from huggingface_hub import CommitOperationAdd

    api.create_commit(args.repo_id, operations=[CommitOperationAdd(cm.CHECKPOINTS_JSON, content)],
                      revision=release.branch, commit_message=f"{cm.CHECKPOINTS_JSON}: {len(entries)} checkpoints")
    print(f"{cm.CHECKPOINTS_JSON}: {len(entries)} checkpoints on {release.branch}")


def publish_tag(api, args: UploadArgs, commit: str, tags: dict) -> None:
    if args.tag in tags:
        if tags[args.tag] != commit:
            raise UploadError(f"tag {args.tag} already exists on {args.repo_id} at another commit "
                              f"({tags[args.tag][:12]}); choose a new tag")
        print(f"tag {args.tag}: already on the release commit, skipped")
        return
    api.create_tag(args.repo_id, tag=args.tag, revision=commit, tag_message=f"Release {args.tag}")
    print(f"tag {args.tag} -> {commit[:12]}")


def publish(api, args: UploadArgs, release: Target, steps: list[Target], states: list[Target]) -> None:
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    refs = api.list_repo_refs(args.repo_id)
    branches = {b.name: b.target_commit for b in refs.branches}
    tags = {t.name: t.target_commit for t in refs.tags}
    clash = sorted(set(tags) & ({t.branch for t in steps} | {release.branch}))
    if clash:
        raise UploadError(f"{args.repo_id} has tags named like the branches to write: {', '.join(clash)}")
    if args.tag in branches:
        raise UploadError(f"--tag {args.tag} collides with the existing branch {args.tag} on {args.repo_id}")
    commit = publish_release(api, args, release, branches)
    commit = publish_training_logs(api, args, release.branch) or commit
    if steps:
        # Step branches start from the initial commit (just .gitattributes), so each holds only its checkpoint.
        root = api.list_repo_commits(args.repo_id, revision="main")[-1].commit_id
        for t in steps:
            publish_step(api, args.repo_id, t, branches, root)
    for t in states:
        publish_optimizer_state(api, args.repo_id, t)
    if commit is not None:  # a pull request gets no checkpoints.json (rerun without --create_pr after merging)
        publish_checkpoints_json(api, args, release, steps, states)
        commit = api.list_repo_commits(args.repo_id, revision=release.branch)[0].commit_id
    if args.tag and commit is not None:
        publish_tag(api, args, commit, tags)
    elif args.tag:
        print(f"tag {args.tag}: skipped for a pull request (tag the merged commit)")


def parse_args(argv) -> UploadArgs:
    args = parse(UploadArgs, argv, "upload", positional="release_dir", error=UploadError)
    if not args.release_dir:
        raise UploadError("missing the release folder: gpt2-owt-upload RELEASE --repo_id user/name")
    if args.repo_id.count("/") != 1:
        raise UploadError(f"--repo_id must look like user/name, got {args.repo_id!r}")
    return args


def run(argv=None) -> None:
    args = parse_args(argv)
    release = release_target(Path(args.release_dir), args.revision)
    if args.checkpoints:  # step branches of another run would be listed beside this release
        if not (Path(args.checkpoints).parent / TRAINING_CONFIG).is_file():
            raise UploadError(f"--checkpoints {args.checkpoints}: not the hf/ folder of a run (no {TRAINING_CONFIG} "
                              "beside it)")
        check_same_run(release.folder, Path(args.checkpoints).parent, "--checkpoints")
    steps = checkpoint_targets(Path(args.checkpoints)) if args.checkpoints else []
    check_plan(args, release, steps)
    if args.with_optimizer_states and not args.checkpoints:
        raise UploadError("--with_optimizer_states needs --checkpoints RUN/hf (the states are in RUN/checkpoints)")
    states = optimizer_state_targets(Path(args.checkpoints), release, steps) if args.with_optimizer_states else []
    if args.with_training_logs:  # a bad run folder or flag combination fails before any network
        if args.create_pr:
            raise UploadError("--with_training_logs cannot go into a pull request: publish them after merging")
        training_log_files(Path(args.with_training_logs))
        check_same_run(release.folder, Path(args.with_training_logs), "--with_training_logs")
    if args.dry_run:
        print_plan(args, release, steps, states, "from the initial commit")
        return
    token = get_token()
    from huggingface_hub import HfApi

    with hub_errors(args.repo_id, token=token, writing=True):  # one line, token scrubbed, no chained traceback
        publish(HfApi(token=token), args, release, steps, states)


@cli_main
def main(argv=None) -> None:
    """Console entry point: an UploadError prints `error: ...` and exits 2 (no traceback that could hold state)."""
    run(argv)


if __name__ == "__main__":
    main()
