"""`gpt2-owt <verb>`: the one command line of the pipeline. Each verb is one stage's module; `gpt2-owt <verb> --help`
lists its flags, and `python -m gpt2_owt.<module>` runs the same code.

    gpt2-owt prepare --output_dir data/owt                                  # OpenWebText -> token files
    accelerate launch -m gpt2_owt.cli train --config training/configs/gpt2-124m-owt.yaml ...
    gpt2-owt trace find --run_dir runs/r1 --text " Barack Obama"
"""

import importlib
import sys

# verb -> (module whose main(argv) runs it, one line for the verb list). Modules load only when their verb runs, so
# `gpt2-owt --help` and the light verbs never import torch.
VERBS = {
    "prepare": ("gpt2_owt.training.prepare_data", "prepare a dataset into token files (data_dir)"),
    "verify-data": ("gpt2_owt.training.manifest", "re-check a data_dir against its manifest"),
    "train": ("gpt2_owt.training.train", "train (under `accelerate launch -m gpt2_owt.cli train` for many processes)"),
    "data-order": ("gpt2_owt.training.data_order", "the sequences and documents of the batch of one update"),
    "attribute": ("gpt2_owt.tracing.attribute", "which training sequences taught a text (Bergson attribution)"),
    "replay": ("gpt2_owt.tracing.replay", "what a run would have learned without some training sequences "
                                         "(exact counterfactual replay)"),
    "trace": ("gpt2_owt.tracing.cli", "behaviour -> training data: index, find, curve (gpt2-owt trace --help)"),
    "explore": ("gpt2_owt.tracing.explore", "the trace explorer: a web page over a run or a release (gradio)"),
    "eval": ("gpt2_owt.eval.evaluate", "evaluate one checkpoint or a series (WikiText, LAMBADA, OWT val)"),
    "harness-tasks": ("gpt2_owt.eval.harness_tasks", "write lm-evaluation-harness task files for our tasks"),
    "card": ("gpt2_owt.model_card.build", "build the release folder and its model card"),
    "upload": ("gpt2_owt.upload", "publish a release, its step branches and optimizer states to the Hub"),
    "verify": ("gpt2_owt.model_card.verify", "verify a published (or local) release"),
    "convert": ("gpt2_owt.modeling.convert", "import/export nanoGPT and llm.c checkpoints"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = [f"  {verb:<{width}}  {what}" for verb, (_, what) in VERBS.items()]
    return "usage: gpt2-owt <verb> [flags]   (gpt2-owt <verb> --help for its flags)\n\nverbs:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        if not argv:
            raise SystemExit(2)
        return
    if argv[0] not in VERBS:
        sys.stderr.write(f"error: unknown verb {argv[0]!r}; expected one of {', '.join(VERBS)}\n")
        raise SystemExit(2)
    module = importlib.import_module(VERBS[argv[0]][0])
    sys.argv = [f"gpt2-owt {argv[0]}", *argv[1:]]  # what the command records as its command line
    module.main(argv[1:])


if __name__ == "__main__":
    main()
