"""The plumbing every stage shares, knowing no stage: the one user-error type and `error:` line (errors), argument
parsing (hf_argparser), Ctrl-C/SIGTERM handling (interrupts), the writer lock of an output folder (folder_lock), the
one output guard (output_paths), readers of JSON and model files (readers), hashes/JSON writes/versions (records),
step folder names (steps) and Hub branch helpers (hub_branches).

Imports nothing from the rest of gpt2_owt, and no torch: every light command can use all of it.
"""
