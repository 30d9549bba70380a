"""Write lm-evaluation-harness task configs that read our shipped data files, so the harness itself runs offline.

    gpt2-owt harness-tasks --output_dir harness_tasks
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 lm_eval --model hf --model_args pretrained=RELEASE_DIR \\
        --tasks wikitext_local,lambada_openai_local --include_path harness_tasks --device cpu --batch_size 8

`wikitext_local` / `lambada_openai_local` `include` the harness's own `wikitext.yaml` / `lambada_openai.yaml` (found
in the installed `lm_eval` package) and change only where the documents come from: JSON-lines files written here
with exactly the rows of `EleutherAI/wikitext_document_level` (`page`) and `EleutherAI/lambada_openai` (`text`).
Needs the optional extra `harness` (`pip install -e ".[harness]"`).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path


from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import cli_main, os_error_message, UserError
from gpt2_owt.core.output_paths import check_writable_location

from . import data as eval_data

# our task name -> (harness yaml relative to lm_eval/tasks, data file we write, JSON field, loader)
LOCAL_TASKS = {
    "wikitext_local": ("wikitext/wikitext.yaml", "wikitext_document_level_test.jsonl", "page", eval_data.wikitext_pages),
    "lambada_openai_local": ("lambada/lambada_openai.yaml", "lambada_openai_test.jsonl", "text", eval_data.lambada_texts),
}


def harness_tasks_dir() -> Path:
    try:
        import lm_eval.tasks
    except ImportError:
        raise UserError("lm-evaluation-harness is not installed: pip install -e '.[harness]'") from None
    return Path(lm_eval.tasks.__file__).parent


def task_yaml(name: str, include: Path, data_file: Path) -> str:
    """A task config: the harness's own, with a local JSON-lines test split and no train/validation splits."""
    return "\n".join([
        f"include: {json.dumps(str(include))}",
        f"task: {name}",
        "tag: []",
        "dataset_path: json",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data_file))}",
        "training_split: null",
        "validation_split: null",
        "test_split: test",
        "",
    ])


def write_harness_tasks(output_dir: str | Path, data_source: str = "shipped") -> list[str]:
    """Write the data files and task yamls into `output_dir`; returns the task names."""
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    tasks_dir = harness_tasks_dir()
    for name, (yaml_rel, data_name, column, loader) in LOCAL_TASKS.items():
        include = tasks_dir / yaml_rel
        if not include.is_file():
            raise UserError(f"{include} not found: this lm_eval version has no {yaml_rel}")
        rows = "".join(json.dumps({column: item}, ensure_ascii=False) + "\n" for item in loader(data_source).items)
        (output_dir / data_name).write_text(rows, encoding="utf-8")
        (output_dir / f"{name}.yaml").write_text(task_yaml(name, include, output_dir / data_name))
    return list(LOCAL_TASKS)


@dataclass
class HarnessTasksArgs:
    output_dir: str = field(metadata={"help": "folder to write the task yamls and data files (--include_path)"})
    data_source: str = field(default="shipped", metadata={"help": "shipped (offline copies) or hub"})


def run(argv: list[str] | None = None) -> list[str]:
    """Write the task folder and print how to use it; returns the task names."""
    args = parse(HarnessTasksArgs, argv, "harness-tasks")
    if args.data_source not in eval_data.SOURCES:
        raise UserError(f"--data_source must be one of {', '.join(eval_data.SOURCES)}, got {args.data_source!r}")
    check_task_folder(Path(args.output_dir))
    try:
        names = write_harness_tasks(args.output_dir, args.data_source)
    except OSError as e:
        raise UserError(os_error_message(e.filename or args.output_dir, e)) from None
    print(f"wrote tasks {', '.join(names)} to {args.output_dir}; run lm_eval with --include_path {args.output_dir}")
    return names


def check_task_folder(output_dir: Path) -> None:
    """A folder (new or existing; only the files named in LOCAL_TASKS are written into it) that can be written."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is an existing file, not a folder")
    check_writable_location(output_dir, "--output_dir", folder=True)


@cli_main
def main(argv: list[str] | None = None) -> None:
    """Console entry point: returns None, so `gpt2-owt-harness-tasks` exits 0 on success."""
    run(argv)


if __name__ == "__main__":
    main()
