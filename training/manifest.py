"""The data_dir manifest: what made a prepared-data folder, and the check that the folder still matches it.

`manifest.json` (written last, by `training.prepare_data`) records the source (dataset id, revision, data files,
builder/config), the split parameters, the tokenizer fingerprint and engine, document and token counts per split,
byte size + sha256 of every other file, package versions and the command line. `verify_data_dir` re-checks all of
it; the trainer calls it before training.

    python -m training.manifest verify --data_dir data/owt      (console script: gpt2-owt-verify-data)
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from modeling import UserError, cli_main, sha256_file, tokenizer_fingerprint
from modeling.records import write_json_atomic
from training.data_dir import MANIFEST, SPLITS, TOKEN_DTYPE, all_files, open_split, tokens_file

FORMAT = "gpt2-owt-data/1"
VERSIONED_PACKAGES = ("datasets", "tiktoken", "tokenizers", "transformers", "numpy", "pyarrow")


def file_entries(data_dir: str | Path, known_sha256: dict[str, str] | None = None) -> dict[str, dict]:
    """{name: {"bytes", "sha256"}} for every data file; hashes already computed while writing are passed in."""
    data_dir, known_sha256 = Path(data_dir), known_sha256 or {}
    entries = {}
    for name in all_files():
        path = data_dir / name
        entries[name] = {"bytes": path.stat().st_size, "sha256": known_sha256.get(name) or sha256_file(path)}
    return entries


def write_manifest(data_dir: str | Path, manifest: dict) -> Path:
    """Write manifest.json into `data_dir` via a temp name (the manifest's presence marks the folder complete)."""
    return write_json_atomic(Path(data_dir) / MANIFEST, manifest)


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found: {data_dir} is not a data_dir made by `python -m training.prepare_data`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path}: unknown manifest format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def check_tokenizer_fingerprint(manifest: dict, where: str) -> None:
    """The one check that data was tokenized with this package's tokenizer (the trainer and the card rely on it)."""
    recorded = (manifest.get("tokenizer") or {}).get("fingerprint")
    if recorded != tokenizer_fingerprint():
        raise UserError(f"{where} was tokenized with tokenizer {str(recorded)[:12]}..., "
                        f"not this package's tokenizer {tokenizer_fingerprint()[:12]}...: prepare the data again")


def verify_data_dir(data_dir: str | Path, check_hashes: bool = True) -> dict:
    """Check every file of `data_dir` against its manifest (size, sha256, token/document counts); return the manifest.

    Raises UserError naming the first file that does not match.
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    check_tokenizer_fingerprint(manifest, str(data_dir))
    files = manifest["files"]
    for name in all_files():
        path = data_dir / name
        if name not in files:
            raise UserError(f"{MANIFEST} of {data_dir} does not list {name}")
        if not path.is_file():
            raise UserError(f"{path} is missing")
        size = path.stat().st_size
        if size != files[name]["bytes"]:
            raise UserError(f"{path} has {size} bytes, manifest says {files[name]['bytes']}")
    if check_hashes:
        for name in tqdm(all_files(), desc="sha256", unit="file", disable=None):
            digest = sha256_file(data_dir / name)
            if digest != files[name]["sha256"]:
                raise UserError(f"{data_dir / name} has sha256 {digest}, manifest says {files[name]['sha256']}")
    for split in SPLITS:
        split_data = open_split(data_dir, split)
        expected = manifest["splits"][split]
        if split_data.num_tokens != expected["tokens"]:
            raise UserError(f"{data_dir / tokens_file(split)} holds {split_data.num_tokens} tokens, "
                            f"manifest says {expected['tokens']}")
        if split_data.num_documents != expected["documents"]:
            raise UserError(f"{data_dir} split {split!r} indexes {split_data.num_documents} documents, "
                            f"manifest says {expected['documents']}")
    return manifest


@dataclass
class VerifyArgs:
    data_dir: str = field(metadata={"help": "prepared data folder (holds manifest.json)"})
    skip_hashes: bool = field(default=False, metadata={"help": "check sizes and counts only (no sha256 pass)"})


@cli_main
def main(argv: list[str] | None = None) -> None:
    from modeling.hf_argparser import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":  # `python -m training.manifest verify --data_dir D`
        argv = argv[1:]
    (args,) = HfArgumentParser(VerifyArgs).parse_args_into_dataclasses(args=argv)
    manifest = verify_data_dir(args.data_dir, check_hashes=not args.skip_hashes)
    counts = ", ".join(f"{s}: {manifest['splits'][s]['documents']:,} docs / {manifest['splits'][s]['tokens']:,} tokens"
                       for s in SPLITS)
    print(f"ok: {args.data_dir} matches its manifest ({counts}; token dtype {TOKEN_DTYPE.__name__})")


if __name__ == "__main__":
    main()
