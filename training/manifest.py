"""The data_dir manifest: what made a prepared-data folder, and the check that the folder still matches it.

`manifest.json` (written last, by `training.prepare_data`) records the source (dataset id, revision, data files,
builder/config), the split parameters, the tokenizer fingerprint and engine, document and token counts per split,
byte size + sha256 of every other file, package versions and the command line. `verify_data_dir` re-checks every
field the files let it recompute (its docstring lists which cannot be); the trainer calls it before training.

    gpt2-owt verify-data --data_dir data/owt      (console script: gpt2-owt-verify-data)
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpt2_owt.core.args import command_argv, parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.records import sha256_file, write_json_atomic
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, tokenizer_fingerprint
from gpt2_owt.training.data_dir import (MANIFEST, SPLITS, TOKEN_DTYPE, TokenSplit, all_files, doc_rows_file, open_split,
                               tokens_file)
from gpt2_owt.training.prepare.split import split_info, split_rows

FORMAT = "gpt2-owt-data/1"
VERSIONED_PACKAGES = ("datasets", "tiktoken", "tokenizers", "transformers", "numpy", "pyarrow")
# When and by which command line a data_dir was made (its output folder included): the same data prepared again
# differs from it only in these.
PROVENANCE_FIELDS = ("created_at", "command")


def file_entries(data_dir: str | Path, known_sha256: dict[str, str] | None = None) -> dict[str, dict]:
    """{name: {"bytes", "sha256"}} for every data file; hashes already computed while writing are passed in."""
    data_dir, known_sha256 = Path(data_dir), known_sha256 or {}
    entries = {}
    for name in all_files():
        path = data_dir / name
        entries[name] = {"bytes": path.stat().st_size, "sha256": known_sha256.get(name) or sha256_file(path)}
    return entries


def manifest_content(manifest: dict) -> dict:
    """The manifest without its provenance fields: equal for two preparations of the same data."""
    return {k: v for k, v in manifest.items() if k not in PROVENANCE_FIELDS}


def write_manifest(data_dir: str | Path, manifest: dict) -> Path:
    """Write manifest.json into `data_dir` via a temp name (the manifest's presence marks the folder complete)."""
    return write_json_atomic(Path(data_dir) / MANIFEST, manifest)


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found: {data_dir} is not a data_dir made by `gpt2-owt prepare`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest object: {data_dir} is not a "
                        f"data_dir made by `gpt2-owt prepare`")
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
    """Check every manifest field that the files let us recompute; return the manifest.

    Recomputed and compared: the tokenizer fingerprint (this package's), vocab_size / eot_token_id / dtype (the
    tokenizer's, and the files': whole uint16 items, every document ends with EOT; that every id is below the
    model's vocab_size is the trainer's check, against the model it builds), byte size and sha256 of every file, per-split token and document counts, source.documents, and the
    split parameters: the stored document rows must be exactly `split_rows(documents, test_size, seed)`, so an
    edited seed or val_fraction is caught. Not recomputable without the source itself (and so only recorded): that
    the tokens are the text of source.dataset/revision/data_files/split/text_column, created_at, command, versions.

    Raises UserError naming the first field or file that does not match.
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    try:
        check_tokenizer(data_dir, manifest)
        check_files(data_dir, manifest["files"], check_hashes)
        splits = {split: check_split(data_dir, split, manifest["splits"][split]) for split in SPLITS}
        check_split_rule(data_dir, manifest, splits)
    except (KeyError, TypeError, IndexError) as e:
        raise UserError(f"{data_dir / MANIFEST} is not a data_dir manifest: field {e} missing or malformed") from None
    return manifest


def check_tokenizer(data_dir: Path, manifest: dict) -> None:
    recorded = manifest["tokenizer"]
    check_tokenizer_fingerprint(manifest, str(data_dir))
    actual = {"vocab_size": VOCAB_SIZE, "eot_token_id": EOT_TOKEN_ID, "dtype": np.dtype(TOKEN_DTYPE).name}
    for key, value in actual.items():
        if recorded[key] != value:
            raise UserError(f"{data_dir / MANIFEST} says tokenizer {key} {recorded[key]!r}, but the files hold "
                            f"{value!r} (GPT-2 tokenizer {tokenizer_fingerprint()[:12]}...)")


def check_files(data_dir: Path, files: dict, check_hashes: bool) -> None:
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


def check_split(data_dir: Path, split: str, expected: dict) -> TokenSplit:
    """Counts, whole items and EOT after every document of one split; return it opened."""
    path = data_dir / tokens_file(split)
    itemsize = np.dtype(TOKEN_DTYPE).itemsize
    if path.stat().st_size % itemsize:
        raise UserError(f"{path} has {path.stat().st_size} bytes, not a whole number of {itemsize}-byte "
                        f"{np.dtype(TOKEN_DTYPE).name} token ids")
    split_data = open_split(data_dir, split)
    if split_data.num_tokens != expected["tokens"]:
        raise UserError(f"{path} holds {split_data.num_tokens} tokens, manifest says {expected['tokens']}")
    if split_data.num_documents != expected["documents"]:
        raise UserError(f"{data_dir} split {split!r} indexes {split_data.num_documents} documents, "
                        f"manifest says {expected['documents']}")
    offsets = np.asarray(split_data.doc_offsets)
    if split_data.num_documents and (offsets[0] != 0 or np.any(np.diff(offsets) < 1) or np.any(
            split_data.tokens[offsets[1:] - 1] != EOT_TOKEN_ID)):
        raise UserError(f"{path}: not every document of the index ends with EOT {EOT_TOKEN_ID}")
    return split_data


def check_split_rule(data_dir: Path, manifest: dict, splits: dict[str, TokenSplit]) -> None:
    """The stored rows of every split are what the recorded split parameters give for this many documents."""
    documents = sum(s.num_documents for s in splits.values())
    if manifest["source"]["documents"] != documents:
        raise UserError(f"{data_dir / MANIFEST} says source documents {manifest['source']['documents']}, but the "
                        f"splits hold {documents}")
    recorded = manifest["split"]
    if recorded != split_info(recorded["test_size"], recorded["seed"]):
        raise UserError(f"{data_dir / MANIFEST} records split {recorded}, not prepare_data's "
                        f"datasets.Dataset.train_test_split(shuffle=True) with val = test")
    expected = split_rows(documents, recorded["test_size"], recorded["seed"])
    for split, rows in expected.items():
        if not np.array_equal(np.asarray(splits[split].doc_rows), rows):
            raise UserError(f"{data_dir / doc_rows_file(split)} does not hold the rows that val_fraction "
                            f"{recorded['test_size']} and seed {recorded['seed']} give for {documents} documents: "
                            f"the manifest's split parameters were edited, or the files")


@dataclass
class VerifyArgs:
    data_dir: str = field(metadata={"help": "prepared data folder (holds manifest.json)"})
    skip_hashes: bool = field(default=False, metadata={"help": "check sizes and counts only (no sha256 pass)"})


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = command_argv(argv)
    if argv and argv[0] == "verify":  # `gpt2-owt verify-data --data_dir D`
        argv = argv[1:]
    args = parse(VerifyArgs, argv, "verify-data")
    manifest = verify_data_dir(args.data_dir, check_hashes=not args.skip_hashes)
    counts = ", ".join(f"{s}: {manifest['splits'][s]['documents']:,} docs / {manifest['splits'][s]['tokens']:,} tokens"
                       for s in SPLITS)
    print(f"ok: {args.data_dir} matches its manifest ({counts}; token dtype {TOKEN_DTYPE.__name__})")


if __name__ == "__main__":
    main()
