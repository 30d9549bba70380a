"""Code the tests share; no tests live here. Test modules import these, never each other.

training    running the trainer (in process or launched), reading its outputs, and the suite's run shapes
cli         the bad-input case table: Case, Workspace, running a verb in process or as a real subprocess
release     the release run's shape, a writable copy of it, eval results in the shape `eval` writes
models      a tiny random-init model saved as a from_pretrained folder
hub_server  a local Hugging Face Hub stand-in, and running a command against it
hub         the upload/verify tests' tokens and commands against that server
tracing     brute-force oracles for the tracing tests and their in-process CLI runner
"""
