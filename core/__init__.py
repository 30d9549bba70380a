"""The plumbing every stage shares, knowing no stage: the one user-error type and `error:` line (errors), argument
parsing (hf_argparser), Ctrl-C/SIGTERM handling (interrupts), the writer lock of an output folder (folder_lock), the
one output guard (output_paths), readers of JSON and model files (readers), hashes/JSON writes/versions (records),
step folder names (steps), plots (plots, matplotlib loaded on first use) and the Hub: one-line errors, the token,
step branches (hub).

Imports nothing from the rest of gpt2_owt, and no torch: every light command can use all of it.
"""
