"""`gpt2-owt trace <verb>`: the tracing commands (each verb's flags: `gpt2-owt trace <verb> --help`)."""

import importlib
import sys

from gpt2_owt.core.errors import UserError, cli_main

# verb -> (module, what it answers)
VERBS = {
    "index": ("gpt2_owt.tracing.index", "build the suffix-array index of a data_dir's train.bin"),
    "find": ("gpt2_owt.tracing.find", "where and when the trainer saw a text (occurrences, exposures by step)"),
    "curve": ("gpt2_owt.tracing.curve", "a text's loss at every exported checkpoint, next to its exposures"),
    "spans": ("gpt2_owt.tracing.spans", "the spans of a text or a generation found verbatim in the training data, "
                                        "with their documents and exposures (OLMoTrace's rules)"),
    "memorization": ("gpt2_owt.tracing.memorization", "which training sequences each checkpoint reproduces verbatim "
                                                      "(Pythia's definition), next to their exposures"),
    "losses": ("gpt2_owt.tracing.losses", "the recorded training loss of each sequence of a run's updates, with its "
                                          "document, source row and text"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    return "usage: gpt2-owt trace <verb> [--help]\n\nverbs:\n" + "\n".join(
        f"  {verb:<{width}}  {what}" for verb, (_, what) in VERBS.items())


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return
    if not argv or argv[0] not in VERBS:
        raise UserError(f"unknown trace verb {argv[0]!r}; expected one of {', '.join(VERBS)}" if argv else
                        f"give a verb: gpt2-owt trace {{{'|'.join(VERBS)}}} ...")
    importlib.import_module(VERBS[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    main()
