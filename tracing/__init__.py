"""Behaviour -> data: which training documents, steps and sequences a text or a model's output comes from.

One module per question, each a command of `gpt2-owt trace` and a Python function the command itself calls
(the command is argument parsing + this function + printing; docs/tracing.md has worked examples):

    index.py      build the suffix-array index of train.bin
                  TraceIndex(data_dir).positions(ids) -> sorted train.bin positions (also across documents)
                  TraceIndex(data_dir).match_ends(ids) -> end of the longest match from every position
    find.py       where and when the trainer saw a text
                  find(index, cfg, ids, until_step=None, limit=10, context=20, losses=None, steps_done=None) -> report
    curve.py      a text's loss at every exported checkpoint, next to its exposures
                  curve(checkpoints_of(run_dir, repo_id), text, prefix, exposures_before=None) -> {"rows": ...}
    spans.py      the spans of a text or a generation found verbatim in train.bin (OLMoTrace's rules)
                  spans(index, cfg, ids, until_step, first_begins_word=True, ...) -> report (the spans part)
                  run_spans(SpansArgs(run_dir=..., prompt=..., generate=True)) -> the whole command's report
                  generate(model, prompt_ids, Decoding(...)) -> generated ids
    memorization.py which training sequences each checkpoint reproduces verbatim (Pythia's definition)
                  memorization(plan(MemorizationArgs(run_dir=..., output_dir=..., sample=N))) -> summary
                  load_memorization(output_dir) -> datasets.Dataset (one row per sequence x checkpoint)
                  greedy_continuations(model, prefixes, suffixes, batch_size) -> greedy ids
    losses.py     a run's recorded per-sequence training losses, with each sequence's documents and text
                  sequence_losses(run_dir, start, end, order="highest", top_k=20) -> report
    attribute.py  which training sequences taught the model a text: Bergson's estimates (gpt2-owt attribute)
                  attribute(Run.open(run_dir), [make_query(text, None, None, seq_len)], candidates, "trackstar",
                            [step], workdir) -> effects [candidates, queries]
    replay.py     what the run would have learned without some of its sequences: the exact counterfactual
                  (gpt2-owt replay), through the trainer's own update from checkpoints/stepS
                  replay(run_dir, S, T, removed=[(update, row), ...], queries=["..."]) -> ReplayResult
                  Replayer(run_dir, S, T): .original(queries), .counterfactual(removed, queries), many per window

    from gpt2_owt.tracing.find import find
    from gpt2_owt.tracing.index import TraceIndex
    from gpt2_owt.training.runs import resolve_config, steps_done
    index, cfg = TraceIndex("data/owt"), resolve_config(None, "runs/r1", [])
    report = find(index, cfg, [464, 1748, 286], steps_done=steps_done("runs/r1", cfg))

Shared pieces, one owner each: exposures.py (token positions -> updates and rows, through the trainer's sampler);
below this package: training/runs.py (a run's recipe, how far it trained, its data, `--updates A:B`),
modeling/tokenizer.py (text <-> ids as the training documents were encoded), modeling/checkpoint_series.py (the
checkpoints of a run or Hub release) and eval/scoring.py (the scorer).
"""
