"""The plumbing every stage shares, knowing no stage:

    errors        the one user-error type, its `error:` line and exit code (cli_main)
    args          `parse(ArgsDataclass, argv, "verb")`: the one way a verb reads its flags (on hf_argparser)
    interrupts    Ctrl-C / SIGTERM: unwind, clean up, one line
    folder_lock   the writer lock of an output folder
    output_paths  the one output guard (where a command may write, atomic writes)
    readers       JSON, JSON lines and model files another stage wrote, damaged files named
    records       hashes, atomic JSON writes, package versions
    steps         step folder and branch names (`stepN`)
    plots         the pipeline's plots (matplotlib loaded on the first plot)
    hub           the Hub: one-line errors, the token, step branches

Imports nothing from the rest of gpt2_owt, and no torch: every light command can use all of it.
"""
