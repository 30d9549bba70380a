"""`gpt2-owt <verb>`: the one command line of the pipeline. Every verb and sub-verb is a row of VERBS; `gpt2-owt <verb>
--help` lists its flags, and `python -m gpt2_owt.<module>` runs the same code.

    gpt2-owt prepare --output_dir data/owt                                  # OpenWebText -> token files
    accelerate launch -m gpt2_owt.cli train --config training/configs/gpt2-124m-owt.yaml ...
    gpt2-owt trace find --run_dir runs/r1 --text " Barack Obama"
"""

import difflib
import importlib
import sys

# verb (with its group: `trace find`) -> (module whose main(argv) runs it, one line for the verb list). A module loads only when
# its verb runs, and parses its flags before any heavy import: `gpt2-owt --help`, every `--help` and every bad flag
# answer without torch.
VERBS = {
    "prepare": ("gpt2_owt.training.prepare_data", "prepare a dataset into token files (data_dir)"),
    "verify-data": ("gpt2_owt.training.manifest", "re-check a data_dir against its manifest"),
    "train": ("gpt2_owt.training.train", "train (under `accelerate launch -m gpt2_owt.cli train` for many "
                                                 "processes)"),
    "data-order": ("gpt2_owt.training.data_order", "the sequences and documents of the batch of one update"),
    "eval": ("gpt2_owt.eval.evaluate", "evaluate one checkpoint or a series (WikiText, LAMBADA, OWT val)"),
    "harness-tasks": ("gpt2_owt.eval.harness_tasks", "write lm-evaluation-harness task files for our tasks"),
    "card": ("gpt2_owt.model_card.build", "build the release folder and its model card"),
    "upload": ("gpt2_owt.upload", "publish a release, its step branches and optimizer states to the Hub"),
    "verify": ("gpt2_owt.model_card.verify", "verify a published (or local) release"),
    "convert": ("gpt2_owt.modeling.convert", "import/export nanoGPT and llm.c checkpoints"),
    "trace index": ("gpt2_owt.tracing.index", "build the suffix-array index of a data_dir's train.bin"),
    "trace find": ("gpt2_owt.tracing.find", "where and when the trainer saw a text (occurrences, exposures by "
                                                 "step)"),
    "trace curve": ("gpt2_owt.tracing.curve", "a text's loss at every exported checkpoint, next to its exposures"),
    "trace spans": ("gpt2_owt.tracing.spans", "the spans of a text or a generation found verbatim in the "
                                                   "training data, with their documents and exposures (OLMoTrace's "
                                                   "rules)"),
    "trace memorization": ("gpt2_owt.tracing.memorization", "which training sequences each checkpoint "
                                                                 "reproduces verbatim (Pythia's definition), next to "
                                                                 "their exposures"),
    "trace losses": ("gpt2_owt.tracing.losses", "the recorded training loss of each sequence of a run's updates, "
                                                     "with its document, source row and text"),
    "attribute": ("gpt2_owt.tracing.attribute", "which training sequences taught a text (Bergson "
                                                        "attribution)"),
    "replay": ("gpt2_owt.tracing.replay", "what a run would have learned without some training sequences "
                                                  "(exact counterfactual replay)"),
    "explore": ("gpt2_owt.tracing.explore", "the trace explorer: a web page over a run or a release "
                                                    "(gradio)"),
}


def usage(group: str | None = None) -> str:
    """The verb list (or, for a group such as `trace`, its verbs)."""
    rows = [(verb, what) if group is None else (verb.split(" ", 1)[1], what) for verb, (_, what) in VERBS.items()
            if group is None or verb.startswith(f"{group} ")]
    width = max(len(verb) for verb, _ in rows)
    name = f"gpt2-owt {group}" if group else "gpt2-owt"
    return (f"usage: {name} <verb> [flags]   ({name} <verb> --help for its flags)\n\nverbs:\n"
            + "\n".join(f"  {verb:<{width}}  {what}" for verb, what in rows))


def fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


def unknown(word: str, choices: list[str], where: str) -> None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    hint = f": did you mean {close[0]}?" if close else f"; expected one of {', '.join(choices)}"
    fail(f"unknown {where} {word!r}{hint}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        if not argv:
            raise SystemExit(2)
        return
    words = list(dict.fromkeys(verb.split(" ")[0] for verb in VERBS))
    if argv[0] not in words:
        unknown(argv[0], words, "verb")
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:  # a group (`trace`): its verb comes next
        group = verb
        if not rest or rest[0] in ("-h", "--help"):
            print(usage(group))
            if not rest:
                raise SystemExit(2)
            return
        members = [v.split(" ", 1)[1] for v in VERBS if v.startswith(f"{group} ")]
        if rest[0] not in members:
            unknown(rest[0], members, f"{group} verb")
        verb, rest = f"{group} {rest[0]}", rest[1:]
    module = importlib.import_module(VERBS[verb][0])
    saved, sys.argv = sys.argv, [f"gpt2-owt {verb}", *rest]  # what the command records as its command line
    try:
        module.main(rest)
    finally:  # a caller in the same process (a test, a notebook) keeps its own
        sys.argv = saved


if __name__ == "__main__":
    main()
