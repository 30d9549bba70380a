"""The pieces of `gpt2-owt prepare`, one concern per module, in the order a run uses them:

    source.py    what to load (flags -> load_dataset arguments), loading it, reading its text column as Arrow
    tokenize.py  tokenizing in source order in worker processes (bounded, race-free signals, no unbounded wait)
    split.py     the train/val split rule (also used by `training.manifest verify` to re-check a data_dir)
    output.py    the output folder: refuse to clobber, build aside, gather the splits, rename into place
"""
