"""Behaviour -> data: which training documents, steps and sequences a text or a model's output comes from.

One module per question, each a command of `gpt2-owt trace` and a Python function the command itself calls:

    index.py      build the suffix-array index of train.bin; TraceIndex.positions(ids)
    find.py       where and when the trainer saw a text: find(index, cfg, ids) -> report
    curve.py      a text's loss over a run's checkpoints: curve(checkpoints, text, prefix) -> rows

Shared pieces, one owner each: exposures.py (token positions -> steps and rows, through the trainer's sampler),
runs.py (a run's recipe and data), text.py (text <-> ids as the training documents were encoded).
"""
