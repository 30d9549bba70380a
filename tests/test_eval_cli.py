"""`gpt2-owt eval` end to end on a tiny random GPT-2: results.json contents, independent re-computations
of the sliding-window and owt_val numbers, batch size invariance, and clear errors for bad inputs."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from gpt2_owt.core.records import sha256_file
from gpt2_owt.eval.evaluate import main
from gpt2_owt.modeling.model import build_model, count_parameters
from gpt2_owt.modeling.tokenizer import load_tokenizer
from helpers.models import save_tiny_model
from gpt2_owt.training.data_dir import open_split

FAST = ["--max_length", "64", "--limit", "1"]  # small windows, first document/example/window of each task


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("eval") / "tiny")


def run(tmp_path, *argv):
    out = tmp_path / "results.json"
    main(["--output", str(out), *map(str, argv)])
    return json.loads(out.read_text())


def test_results_json_follows_the_schema(tiny_dir, tmp_path, owt_data_dir):
    results = run(tmp_path, "--model", tiny_dir, "--data_dir", owt_data_dir, "--batch_size", 4, *FAST)
    assert set(results["tasks"]) == {"wikitext", "lambada_openai", "wikitext_sliding", "owt_val"}
    model = results["model"]
    assert model["name_or_path"] == str(tiny_dir) and model["revision"] is None
    assert model["weights_sha256"] == sha256_file(tiny_dir / "model.safetensors")
    assert model["num_parameters"] == count_parameters(build_model("tiny"))
    assert results["settings"] == {"max_length": 64, "batch_size": 4, "dtype": "float32", "fused_gelu": True,
                                   "device": "cpu", "data_source": "shipped", "limit": 1}
    assert results["versions"]["torch"] == torch.__version__ and results["created_at"]
    wt = results["tasks"]["wikitext"]
    assert set(wt["metrics"]) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert wt["counts"]["documents"] == 1 and wt["counts"]["words"] > 0 and wt["counts"]["bytes"] > wt["counts"]["words"]
    assert math.log(wt["metrics"]["byte_perplexity"]) / math.log(2) == pytest.approx(wt["metrics"]["bits_per_byte"])
    assert wt["data"]["source"] == "shipped:wiki.test.raw.gz" and "WikiText-103" in wt["notes"]
    assert set(results["tasks"]["lambada_openai"]["metrics"]) == {"acc", "perplexity", "acc_last_token"}
    assert results["tasks"]["lambada_openai"]["counts"]["examples"] == 1
    assert results["tasks"]["wikitext_sliding"]["settings"]["stride"] == 64  # default 512 capped at max_length
    assert set(results["tasks"]["owt_val"]["metrics"]) == {"loss", "perplexity"}
    for block in results["tasks"].values():
        assert all(isinstance(v, float) for v in block["metrics"].values())


@pytest.mark.slow
def test_batch_size_gives_the_same_numbers(tiny_dir):
    """Every task's numbers with batch size 7 equal batch size 1 (windows of different lengths share batches)."""
    from gpt2_owt.eval.tasks import TASKS, TaskSetup

    model = GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    tokenizer = load_tokenizer()
    limits = {"wikitext": 1, "lambada_openai": 16, "wikitext_sliding": 4}
    for task, limit in limits.items():
        one, many = (TASKS[task](TaskSetup(model=model, tokenizer=tokenizer, max_length=48, batch_size=batch_size,
                                           stride=20, limit=limit))["metrics"] for batch_size in (1, 7))
        assert many == pytest.approx(one, rel=1e-6), task


def test_sliding_window_equals_the_guide_loop(tiny_dir, tmp_path):
    """The guide's code, transcribed, on the first windows of the same token sequence."""
    from gpt2_owt.eval.data import wikitext_rows
    from gpt2_owt.eval.tasks import TaskSetup, sliding_perplexity
    from gpt2_owt.modeling.tokenizer import load_tokenizer

    model = GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    tokens = load_tokenizer()("\n\n".join(wikitext_rows().items[:12]))["input_ids"]
    max_length, stride = 64, 24
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, len(tokens), stride):
        end_loc = min(begin_loc + max_length, len(tokens))
        trg_len = end_loc - prev_end_loc
        input_ids = torch.tensor([tokens[begin_loc:end_loc]])
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        num_loss_tokens = (target_ids != -100).sum().item() - target_ids.size(0)
        nll_sum += loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == len(tokens):
            break
    setup = TaskSetup(model=model, tokenizer=None, max_length=max_length, batch_size=5, stride=stride)
    metrics, counts = sliding_perplexity(setup, tokens)
    assert counts["loss_tokens"] == n_tokens
    assert metrics["perplexity"] == pytest.approx(math.exp(nll_sum / n_tokens), rel=1e-6)


def test_owt_val_equals_nanogpt_blocks(tiny_dir, tmp_path, owt_data_dir):
    results = run(tmp_path, "--model", tiny_dir, "--tasks", "owt_val", "--data_dir", owt_data_dir,
                  "--max_length", 128, "--batch_size", 3, "--limit", 6)
    tokens = torch.from_numpy(open_split(owt_data_dir, "val").tokens.astype(np.int64))
    model = GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, 6 * 128, 128):
            block = tokens[start:start + 129][None]  # nanoGPT get_batch: x = block[:-1], y = block[1:]
            n = block.shape[1] - 1
            total += model(block, labels=block).loss.item() * n
            count += n
    owt = results["tasks"]["owt_val"]
    assert owt["counts"] == {"tokens": count, "windows": 6, "documents": 4}
    assert owt["metrics"]["loss"] == pytest.approx(total / count, rel=1e-6)
    assert owt["metrics"]["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--model", "/nonexistent/model"], "does not exist"),
    (["--model", "nobody-here/no-such-model"], "cannot reach the Hub for nobody-here/no-such-model: HF_HUB_OFFLINE"),
    (["--tasks", "wikitext,hellaswag"], "unknown task"),
    (["--tasks", "owt_val"], "needs --data_dir"),
    (["--limit", "0", "--tasks", "lambada_openai"], "no LAMBADA examples"),
    (["--dtype", "float8"], "--dtype"),
    (["--stride", "1000", "--tasks", "wikitext_sliding"], "--stride"),
    (["--max_length", "5000"], "--max_length"),
])
def test_bad_inputs_exit_with_one_clear_line(tiny_dir, tmp_path, capsys, argv, message):
    if "--model" not in argv:
        argv = ["--model", str(tiny_dir), *argv]
    with pytest.raises(SystemExit) as exc:
        main(["--output", str(tmp_path / "r.json"), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "r.json").exists()


def test_vocab_mismatch_and_empty_val_split(tmp_path, capsys, owt_data_dir):
    small_vocab = save_tiny_model(tmp_path / "small_vocab", vocab_size=1000)
    with pytest.raises(SystemExit):
        main(["--model", str(small_vocab), "--output", str(tmp_path / "r.json")])
    assert "do not match" in capsys.readouterr().err

    import shutil
    empty = tmp_path / "empty_data"
    shutil.copytree(owt_data_dir, empty)
    (empty / "val.bin").write_bytes(b"")
    np.save(empty / "val.docs.npy", np.zeros(1, dtype=np.int64))
    np.save(empty / "val.rows.npy", np.zeros(0, dtype=np.int64))
    tiny = save_tiny_model(tmp_path / "tiny")
    with pytest.raises(SystemExit):
        main(["--model", str(tiny), "--tasks", "owt_val", "--data_dir", str(empty), "--output", str(tmp_path / "r.json")])
    assert "needs at least 2" in capsys.readouterr().err


def full_logits_scores(model, windows):
    """The straightforward scoring (what the harness's HFLM does): one window at a time, logits at every position,
    a float64 log-softmax over the whole [positions, vocab] block, then the scored targets picked out."""
    scores = []
    with torch.no_grad():
        for w in windows:
            logits = model(torch.tensor([list(w.input_ids)])).logits[0].double()
            logprobs = torch.log_softmax(logits, dim=-1)
            n, k = len(w.input_ids), w.num_scored
            targets = torch.tensor(list(w.target_ids[n - k:]))
            picked = logprobs[n - k:].gather(-1, targets[:, None]).squeeze(-1)
            greedy = logits[n - k:].argmax(-1) == targets
            scores.append((float(picked.sum()), bool(greedy.all()), bool(greedy[-1])))
    return scores


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_fast_scoring_equals_full_logits_scoring(tiny_dir, batch_size):
    """Head only at scored positions, length-sorted right-padded batches without a mask, chunked log-softmax: the
    same numbers as full-logits scoring of each window alone, on a mix of LAMBADA and rolling WikiText windows."""
    from gpt2_owt.eval.scoring import score_windows
    from gpt2_owt.eval.tasks import TaskSetup, lambada_request, wikitext_detokenizer
    from gpt2_owt.eval.windows import loglikelihood_window, rolling_windows
    from gpt2_owt.eval.data import lambada_texts, wikitext_pages

    model = GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    setup = TaskSetup(model=model, tokenizer=load_tokenizer(), max_length=100, batch_size=batch_size)
    (doc,) = setup.encode([wikitext_detokenizer(wikitext_pages().items[0])[:1500]])
    windows = rolling_windows(doc, setup.prefix_token_id, 100)  # full windows and a short right-aligned last one
    for context, target in map(lambada_request, lambada_texts().items[:12]):
        (ctx,), (whole,) = setup.encode([context]), setup.encode([context + target])
        windows.append(loglikelihood_window(ctx, whole[len(ctx):], 100))
    windows.append(loglikelihood_window([50256], [11], 100))  # a 1-token window next to 100-token ones
    assert len({len(w.input_ids) for w in windows}) > 5
    expected = full_logits_scores(model, windows)
    got = score_windows(model, windows, batch_size)
    assert [s.logprob for s in got] == pytest.approx([e[0] for e in expected], rel=1e-6)
    assert [(s.greedy, s.last_correct) for s in got] == [e[1:] for e in expected]


def test_tokens_are_cached_across_setups(tiny_dir):
    """A series shares one TokenCache: the second checkpoint's tasks do not tokenize again, same ids."""
    from gpt2_owt.eval.tasks import TokenCache

    cache, tokenizer = TokenCache(), load_tokenizer()
    calls = []

    class Counting:
        def __init__(self, tok):
            self.backend_tokenizer = tok.backend_tokenizer

        def __call__(self, texts):
            calls.append(len(texts))
            return tokenizer(texts)

    first = cache.encode(Counting(tokenizer), ["hello world", "a b"])
    again = cache.encode(Counting(tokenizer), ["hello world", "a b"])
    assert first == again == tokenizer(["hello world", "a b"])["input_ids"] and calls == [2]
    cache.encode(Counting(tokenizer), ["hello world"])  # other texts: tokenized
    assert calls == [2, 1]
