"""Evaluation stage: `gpt2-owt eval` (any from_pretrained folder or Hub id -> results.json).

    data.py          shipped / Hub evaluation data (WikiText-2 raw test, OpenAI LAMBADA)
    windows.py       token sequences -> scoring windows, one function per protocol (harness, HF guide, nanoGPT)
    scoring.py       batched scoring of windows with a causal LM
    tasks.py         the four tasks: data -> windows -> scores -> metrics
    metrics/         the aggregations as local `evaluate` modules (loaded by path, offline)
    evaluate.py      the command; harness_tasks.py writes lm-evaluation-harness configs for our local data

Imports `modeling` and the data_dir layout module (`training.data_dir`) only.
"""
