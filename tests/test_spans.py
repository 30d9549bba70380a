"""`gpt2-owt trace spans`: OLMoTrace's spans of a text or a generation, against brute force (longest matches by a
scan of train.bin, exposures from the batches `training.data_order` lists update by update), against infini-gram's
own `attribute`, and end to end on a trained run (the generated ids equal a plain `generate` call)."""

import json
import math
import shlex
import shutil

import numpy as np
import pytest
import torch

from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID, load_tokenizer
from gpt2_owt.modeling.tokenizer import encode
from gpt2_owt import cli
from gpt2_owt.tracing.index import INDEX_DIR, TraceIndex
from gpt2_owt.tracing.spans import spans, word_start_ids
from gpt2_owt.training.config import parse_config
from gpt2_owt.training.data_dir import WindowSampler, open_split
from gpt2_owt.training.data_order import batch_order
from helpers.tracing import brute_positions, run_cli
from helpers.training import SEED_RUN
from helpers.training import TINY_YAML, load_export

SEQ_LEN, BATCH, STEPS = 32, 8, 400  # a recipe over ~2.5 epochs of the sample: exposures repeat
CONFIG_ARGS = ["--seq_len", str(SEQ_LEN), "--global_batch_size", str(BATCH), "--micro_batch_size", "4",
               "--max_steps", str(STEPS), "--warmup_steps", "2"]
NEWLINE, PERIOD = 198, 13


@pytest.fixture(scope="module")
def data_dir(indexed_data_dir):
    """The session's indexed sample (read-only)."""
    return indexed_data_dir


@pytest.fixture(scope="module")
def cfg():
    return parse_config(["--config", str(TINY_YAML), *CONFIG_ARGS], validate=False)


@pytest.fixture(scope="module")
def tokens(data_dir):
    return np.asarray(open_split(data_dir, "train").tokens, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------- brute force

def brute_word_starts(ids: list[int], first_begins_word: bool) -> list[bool]:
    """OLMoTrace's rule read off the HF tokenizer's token strings ("Ġ" space, "Ċ" newline), plus EOT and the token
    after it (a document start) and the text's first token unless it continues a prompt."""
    names = load_tokenizer().convert_ids_to_tokens(ids)
    begins = [name.startswith(("Ġ", "Ċ")) or t == EOT_TOKEN_ID or (i > 0 and ids[i - 1] == EOT_TOKEN_ID)
              for i, (name, t) in enumerate(zip(names, ids))]
    if ids:
        begins[0] = begins[0] or first_begins_word
    return begins + [True]


def brute_maximal_spans(tokens, ids, first_begins_word=True) -> tuple[list, dict]:
    """Every maximal span by scanning train.bin for each longer prefix; also what the rules changed (for coverage)."""
    begins = brute_word_starts(ids, first_begins_word)
    found, last, seen = [], 0, {"cut": 0, "backed_off": 0, "across_documents": 0}
    for start in range(len(ids)):
        if not begins[start]:
            continue
        end = start
        while end < len(ids) and brute_positions(tokens, ids[start:end + 1]).size:
            end += 1
        raw = end
        for p in range(start, end - 1):
            if ids[p] in (NEWLINE, PERIOD):
                end = p + 1
                break
        seen["cut"] += end < raw
        cut = end
        while end > start and not begins[end]:
            end -= 1
        seen["backed_off"] += end < cut
        if end > start and end > last:
            found.append((start, end))
            last = end
            seen["across_documents"] += EOT_TOKEN_ID in ids[start:end - 1]
    return found, seen


@pytest.fixture(scope="module")
def all_batches(data_dir, cfg):
    """Every update's batch as `training.data_order` lists it: (update, row, token_start, token_end)."""
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(cfg, split)
    return np.array([(u, s["index"], s["token_start"], s["token_end"]) for u in range(STEPS)
                     for s in batch_order(split, sampler, u)["sequences"]], dtype=np.int64)


def brute_exposures(all_batches, positions, n: int, until: int) -> list[int]:
    """The update of every exposure of every occurrence, sorted."""
    update, _, start, end = all_batches.T
    return sorted(int(u) for p in positions for u in update[(start <= p) & (p + n <= end) & (update < until)])


def check_report(report, tokens, ids, all_batches, until, first_begins_word=True, checkpoint_step=None,
                 percent=5):
    """The report equals brute force: maximal spans, the kept ones, counts, documents, exposures. Returns coverage."""
    found, seen = brute_maximal_spans(tokens, ids, first_begins_word)
    assert report["num_maximal_spans"] == len(found)
    total = len(tokens)
    counts = np.bincount(tokens, minlength=EOT_TOKEN_ID + 1)
    unigram = [sum(math.log(counts[t] / total) if counts[t] else -10000.0 for t in ids[a:b]) for a, b in found]
    keep = -(-len(ids) * percent // 100)  # ceil(percent% of the tokens), in integers
    kept = sorted(sorted(range(len(found)), key=lambda k: unigram[k])[:keep])
    assert [(s["start"], s["end"]) for s in report["spans"]] == [found[k] for k in kept]
    for s, k in zip(report["spans"], kept):
        span = ids[s["start"]:s["end"]]
        positions = brute_positions(tokens, span)
        assert s["token_ids"] == span and s["count"] == positions.size > 0
        assert s["unigram_logprob_sum"] == pytest.approx(unigram[k], abs=1e-9)
        every = brute_exposures(all_batches, positions, len(span), until)
        assert s["exposures"] == len(every)
        assert (s["first_update"], s["last_update"]) == ((every[0], every[-1]) if every else (None, None))
        if checkpoint_step is not None and every:
            assert s["steps_since_last_exposure"] == checkpoint_step - every[-1] - 1
        assert [d["token_position"] for d in s["documents"]] == positions[:10].tolist()
        for d in s["documents"]:
            assert d["exposures"] == len(brute_exposures(all_batches, [d["token_position"]], len(span), until))
            assert tokens[d["token_position"]:d["token_position"] + len(span)].tolist() == span
    return seen


def query_texts(tokens, split) -> list[list[int]]:
    """Texts of training text glued to text that is not in it: mid-word starts and ends, sentences that run on
    through a delimiter, document boundaries (an EOT and the next document's start)."""
    rng = np.random.default_rng(0)
    texts = []
    for k in range(8):
        a, b = rng.integers(0, len(tokens) - 60, 2)
        texts.append(tokens[a:a + 10 + 3 * k].tolist() + encode(" zzqx blorf") + tokens[b:b + 20].tolist())
    for d in (2, 9, 17):  # across a document boundary, then something else
        o = int(split.doc_offsets[d])
        texts.append(tokens[o - 12:o + 9].tolist() + encode("qq zzqx") + tokens[o + 40:o + 52].tolist())
    texts.append(encode(" the city of Chicago.\nIt said the police had"))
    absent = np.flatnonzero((np.bincount(tokens, minlength=EOT_TOKEN_ID + 1) == 0) & word_start_ids())
    texts.append(absent[100:106].tolist())  # words train.bin never holds: no span
    return texts


# ---------------------------------------------------------------------------------------------------- the rules

@pytest.mark.slow
def test_spans_equal_brute_force(data_dir, cfg, tokens, all_batches):
    index = TraceIndex(data_dir)
    coverage = {"cut": 0, "backed_off": 0, "across_documents": 0}
    texts = query_texts(tokens, index.split)
    for k, ids in enumerate(texts):
        until = (STEPS, 150, 37)[k % 3]
        for first_begins_word in (True, False):
            report = spans(index, cfg, ids, until, first_begins_word=first_begins_word, checkpoint_step=until)
            seen = check_report(report, tokens, ids, all_batches, until, first_begins_word, checkpoint_step=until)
            for key in coverage:
                coverage[key] += seen[key]
    assert report["spans"] == [] and report["num_maximal_spans"] == 0  # the last text: nothing in train.bin
    assert all(coverage.values()), coverage  # each rule really changed some span


def test_span_across_a_document_boundary_is_found_as_find_finds_it(data_dir, cfg, tokens):
    """infini-gram alone stops at a document's end; the span goes on through the EOT into the next document (the
    document before ends on a delimiter, so a span cannot run into its EOT; one starts at the EOT)."""
    index = TraceIndex(data_dir)
    o = int(index.split.doc_offsets[5])
    ids = tokens[o - 8:o + 8].tolist()
    assert ids[7] == EOT_TOKEN_ID
    within = index.engine.creativity(input_ids=ids)["rs"]
    assert within[0] == within[7] == 8  # the suffix array's longest matches end at the EOT
    report = spans(index, cfg, ids, STEPS, density=1.0)
    crossing = [s for s in report["spans"] if s["start"] <= 7 < s["end"] - 1]
    assert crossing and all(s["count"] == brute_positions(tokens, s["token_ids"]).size for s in crossing)
    assert o - 8 + crossing[0]["start"] in [d["token_position"] for d in crossing[0]["documents"]]


@pytest.mark.slow
def test_maximal_spans_equal_infini_gram_attribute(data_dir, tokens, tmp_path):
    """On texts where OLMoTrace's rules and ours coincide (no EOT, the first token a word start), the spans and counts
    are infini-gram's `attribute` with OLMoTrace's settings; its unigram log-probs count one separator per document
    in the total (ours: train.bin's tokens), a known per-token offset."""
    from infini_gram.engine import InfiniGramEngine

    from gpt2_owt.tracing.spans import delimiter_ids, maximal_spans, unigram_logprobs

    index = TraceIndex(data_dir)
    bow = tmp_path / "bow_ids.txt"
    bow.write_text("\n".join(map(str, np.flatnonzero(word_start_ids()))))
    engine = InfiniGramEngine(index_dir=[str(data_dir / INDEX_DIR / "shard_00000")], eos_token_id=EOT_TOKEN_ID,
                              token_dtype="u16", bow_ids_path=str(bow), precompute_unigram_logprobs=True)
    n, docs = index.split.num_tokens, index.split.num_documents
    rng = np.random.default_rng(1)
    compared = 0
    for _ in range(12):
        a, b = rng.integers(0, len(tokens) - 40, 2)
        ids = encode(" Hello") + tokens[a:a + 15].tolist() + encode(" zzqx and") + tokens[b:b + 12].tolist()
        if EOT_TOKEN_ID in ids:
            continue
        ours = maximal_spans(index.match_ends(ids), ids)
        theirs = engine.attribute(input_ids=ids, delim_ids=delimiter_ids(), min_len=1, max_cnt=10**9,
                                  enforce_bow=True)["spans"]
        assert ours == [(s["l"], s["r"]) for s in theirs]
        logprobs = unigram_logprobs(index, ids)
        for (start, end), s in zip(ours, theirs):
            assert s["count"] == index.positions(ids[start:end]).size
            assert s["unigram_logprob_sum"] == pytest.approx(
                logprobs[start:end].sum() + (end - start) * math.log(n / (n + docs)), abs=1e-6)
        compared += len(ours)
    assert compared > 10


# ---------------------------------------------------------------------------------------------------- a run

def greedy_reference(folder, prompt_ids, n):
    """A plain transformers generate call: the oracle for the ids `trace spans --generate` searches."""
    model = load_export(folder)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False,
                             eos_token_id=EOT_TOKEN_ID, pad_token_id=EOT_TOKEN_ID)
    return out[0, len(prompt_ids):].tolist()


@pytest.mark.slow  # generation and a search per checkpoint: ~15 s
def test_generate_searches_the_generated_ids(trained_run, data_dir, tokens, capsys):
    run = trained_run(**SEED_RUN)
    steps = SEED_RUN["max_steps"]
    split = open_split(data_dir, "train")
    run_cfg = json.loads((run / "training_config.json").read_text())
    sampler = WindowSampler.for_run(run_cfg, split)
    batches = np.array([(u, s["index"], s["token_start"], s["token_end"]) for u in range(steps)
                        for s in batch_order(split, sampler, u)["sequences"]], dtype=np.int64)
    prompt = "The police said"
    argv = ["spans", "--run_dir", str(run), "--data_dir", str(data_dir), "--prompt", prompt, "--generate",
            "--max_new_tokens", "24", "--span_density", "0.5"]
    capsys.readouterr()
    cli.main(["trace", *argv, "--json"])
    report = json.loads(capsys.readouterr().out)
    prompt_ids = encode(prompt)
    assert report["input"] == "generate" and report["prompt_ids"] == prompt_ids
    assert report["token_ids"] == greedy_reference(run / "hf" / "final", prompt_ids, 24)
    assert report["checkpoint"]["label"] == "hf/final" and report["checkpoint"]["step"] == steps == report["until_step"]
    assert report["generation"]["do_sample"] is False and report["generation"]["seed"] is None
    check_report(report, tokens, report["token_ids"], batches, steps, first_begins_word=False, checkpoint_step=steps,
                 percent=50)
    # a sample of the 12-step model (its greedy text is mostly punctuation, no word starts): spans, each with its
    # log-prob under the checkpoint after the prompt and the text before it
    cli.main(["trace", *argv, "--do_sample", "--seed", "1", "--json"])
    sampled = json.loads(capsys.readouterr().out)
    check_report(sampled, tokens, sampled["token_ids"], batches, steps, first_begins_word=False,
                 checkpoint_step=steps, percent=50)
    assert sampled["spans"]
    model = load_export(run / "hf" / "final")
    for s in sampled["spans"]:
        whole = torch.tensor([prompt_ids + sampled["token_ids"][:s["end"]]])
        with torch.no_grad():
            logp = model(whole).logits[0, :-1].log_softmax(-1).gather(1, whole[0, 1:, None])[:, 0]
        assert s["model_logprob"] == pytest.approx(float(logp[-(s["end"] - s["start"]):].sum()), abs=1e-4)

    # the printed command repeats the generation; step0 (updates < 0) has seen nothing
    cli.main(["trace", *argv])
    text = capsys.readouterr().out
    repeat = next(line for line in text.splitlines() if line.startswith("repeat: "))[len("repeat: "):]
    assert f"--checkpoint step{steps}" in repeat
    cli.main(["trace", "spans", *shlex.split(repeat)[3:], "--data_dir", str(data_dir), "--json", "--span_density", "0.5"])
    assert json.loads(capsys.readouterr().out)["token_ids"] == report["token_ids"]
    cli.main(["trace", *argv, "--checkpoint", "step0", "--json"])
    early = json.loads(capsys.readouterr().out)
    assert early["until_step"] == 0 and all(s["exposures"] == 0 for s in early["spans"])
    assert early["token_ids"] == greedy_reference(run / "hf" / "step0", prompt_ids, 24)

    # sampling: the seed decides the ids, and the report names every setting
    sampled = []
    for seed in (3, 3, 4):
        cli.main(["trace", *argv, "--do_sample", "--seed", str(seed), "--top_k", "0", "--json"])
        sampled.append(json.loads(capsys.readouterr().out))
    assert sampled[0]["token_ids"] == sampled[1]["token_ids"] != sampled[2]["token_ids"]
    assert {k: sampled[0]["generation"][k] for k in ("do_sample", "seed", "top_k", "temperature", "top_p")} == \
        {"do_sample": True, "seed": 3, "top_k": 0, "temperature": 1.0, "top_p": 1.0}


def test_spans_past_the_context_are_scored_in_a_window(trained_run, data_dir, tokens, capsys):
    """A text longer than the model's context (n_positions 256 for the tiny model) whose kept spans lie past it
    (issue 33: IndexError): each span is scored in one window of n_positions tokens, what precedes it cut from the
    left, exactly as the evaluation's loglikelihood window reads it."""
    run = trained_run(**SEED_RUN)
    model = load_export(run / "hf" / "final")
    n = model.config.n_positions
    text_ids = [int(t) for t in tokens[:n + 120] if t != EOT_TOKEN_ID][:n + 100]  # training text: spans all along
    capsys.readouterr()
    cli.main(["trace", "spans", "--run_dir", str(run), "--data_dir", str(data_dir), "--token_ids", *map(str, text_ids),
                    "--checkpoint", f"step{SEED_RUN['max_steps']}", "--span_density", "1.0", "--json"])
    report = json.loads(capsys.readouterr().out)
    late = [s for s in report["spans"] if s["end"] + 1 > n]
    assert late, [(s["start"], s["end"]) for s in report["spans"]]
    for s in late:
        whole = ([EOT_TOKEN_ID] + text_ids[:s["end"]])[-(n + 1):]
        ids = torch.tensor([whole])
        with torch.no_grad():
            logp = model(ids[:, :-1]).logits[0].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
        assert s["model_logprob"] == pytest.approx(float(logp[-(s["end"] - s["start"]):].sum()), abs=1e-3)


def test_a_generation_with_no_span(trained_run, data_dir, tokens, tmp_path, capsys):
    """A checkpoint made to repeat one token train.bin never holds: its generation has no span at all."""
    from gpt2_owt.modeling.hf_folder import save_hf_folder

    run = shutil.copytree(trained_run(**SEED_RUN), tmp_path / "run")
    absent = int(np.flatnonzero(np.bincount(tokens, minlength=EOT_TOKEN_ID + 1)[:EOT_TOKEN_ID] == 0)[500])
    model = load_export(run / "hf" / "final")
    torch.manual_seed(0)
    with torch.no_grad():
        model.transformer.wte.weight[absent] = 5.0 * torch.nn.functional.normalize(torch.randn(model.config.n_embd), dim=0)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(model.transformer.wte.weight[absent])  # every position predicts `absent`
    info = json.loads((run / "hf" / "final" / "export_info.json").read_text())
    save_hf_folder(model, run / "hf" / "final", overwrite=True, export_info={k: info[k] for k in ("step", "tokens")})
    capsys.readouterr()
    cli.main(["trace", "spans", "--run_dir", str(run), "--data_dir", str(data_dir), "--prompt", "The police said",
                    "--generate", "--max_new_tokens", "8", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["token_ids"] == [absent] * 8
    assert report["spans"] == [] and report["num_maximal_spans"] == 0
    cli.main(["trace", "spans", "--run_dir", str(run), "--data_dir", str(data_dir), "--prompt", "The police said",
                    "--generate", "--max_new_tokens", "8"])
    assert "no span of the text occurs in train.bin" in capsys.readouterr().out


def test_bad_inputs_are_one_error_line(trained_run, data_dir, owt_data_dir, tmp_path, capsys):
    run = trained_run(**SEED_RUN)
    other = tmp_path / "other"  # another data_dir, with its own index
    shutil.copytree(data_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(manifest | {"note": "re-prepared"}))
    cli.main(["trace", "index", "--data_dir", str(other), "--num_proc", "1", "--mem_gb", "1"])
    capsys.readouterr()
    base = ["spans", "--run_dir", str(run)]
    cases = {
        "no trace index at": [*base, "--data_dir", str(owt_data_dir), "--text", "the police"],
        "has no checkpoint of step 7; available: step0, step12 (final)": [
            *base, "--data_dir", str(data_dir), "--checkpoint", "step7", "--prompt", "a", "--generate"],
        "was not trained on": [*base, "--data_dir", str(other), "--text", "the police"],
        "give exactly one of --text, --token_ids and --prompt": [*base, "--data_dir", str(data_dir)],
        "--prompt is for --generate": [*base, "--data_dir", str(data_dir), "--prompt", "a", "--text", "b"],
        "--max_new_tokens must be >= 1": [*base, "--data_dir", str(data_dir), "--prompt", "a", "--generate",
                                          "--max_new_tokens", "0"],
        "exceeds the model's context": [*base, "--data_dir", str(data_dir), "--prompt", "a", "--generate",
                                        "--max_new_tokens", "5000"],
        "--generate needs a model": ["spans", "--config", str(TINY_YAML), "--data_dir", str(data_dir), "--prompt",
                                     "a", "--generate"],
        "gives another data order": [*base, "--data_dir", str(data_dir), "--config", str(TINY_YAML), "--text", "a"],
        "run_dir": ["spans", "--run_dir", str(tmp_path / "nope"), "--text", "a"],
    }
    for message, argv in cases.items():
        code, captured = run_cli(capsys, *argv)
        lines = captured.err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            (message, lines)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp")]


UPLOAD_RECIPE = """
import sys
from huggingface_hub import HfApi
repo, config, manifest = sys.argv[1:]
for path, name in ((config, "training_config.json"), (manifest, "manifest.json")):  # what a release holds on main
    HfApi().upload_file(path_or_fileobj=path, path_in_repo=name, repo_id=repo)
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_published_release_answers_as_its_run(trained_run, data_dir, tmp_path, capsys):
    """--repo_id: the release's own recipe (training_config.json on main) and data check (its manifest.json), main
    as the final step, a stepN branch by --revision; the same spans and exposures as the run folder gives."""
    from helpers.hub_server import PUBLISH_STEPS, alice_hub, run_with_hub

    run = trained_run(**SEED_RUN)
    repo = "alice/tiny-spans"
    ask = ["--prompt", "The police said", "--generate", "--max_new_tokens", "24", "--span_density", "0.5",
           "--do_sample", "--seed", "1", "--json"]
    ids = open_split(data_dir, "train").tokens[400:404].tolist()
    with alice_hub(tmp_path / "hf_home") as hub:
        assert run_with_hub(hub.env, "-c", PUBLISH_STEPS, repo, str(run / "hf"), "0").returncode == 0
        assert run_with_hub(hub.env, "-c", UPLOAD_RECIPE, repo, str(run / "training_config.json"),
                            str(run / "data_manifest.json")).returncode == 0
        hub_spans = [run_with_hub(hub.env, "-m", "gpt2_owt.tracing.spans", "--repo_id", repo, "--data_dir",
                                  str(data_dir), *revision, *ask) for revision in ([], ["--revision", "step0"])]
        hub_find = run_with_hub(hub.env, "-m", "gpt2_owt.tracing.find", "--repo_id", repo, "--data_dir",
                                str(data_dir), "--token_ids", *map(str, ids), "--json")
        wrong_data = run_with_hub(hub.env, "-m", "gpt2_owt.tracing.spans", "--repo_id", repo, "--data_dir",
                                  str(tmp_path / "hf_home"), *ask)
    assert all(p.returncode == 0 for p in [*hub_spans, hub_find]), [p.stderr[-2000:] for p in hub_spans]
    final, first = (json.loads(p.stdout) for p in hub_spans)
    capsys.readouterr()
    for report, checkpoint in ((final, "final"), (first, "step0")):
        cli.main(["trace", "spans", "--run_dir", str(run), "--data_dir", str(data_dir), "--checkpoint", checkpoint, *ask])
        local = json.loads(capsys.readouterr().out)
        assert report["token_ids"] == local["token_ids"] and report["spans"] == local["spans"]
        assert report["until_step"] == local["until_step"] == {"final": 12, "step0": 0}[checkpoint]
        assert report["checkpoint"]["revision"] == {"final": "main", "step0": "step0"}[checkpoint]
    cli.main(["trace", "find", "--run_dir", str(run), "--data_dir", str(data_dir), "--token_ids", *map(str, ids),
                    "--json"])
    local = json.loads(capsys.readouterr().out)
    assert json.loads(hub_find.stdout) | {"occurrences": None} == local | {"occurrences": None}  # losses: run only
    assert wrong_data.returncode == 2 and "needs --data_dir" in wrong_data.stderr.strip().splitlines()[-1]
