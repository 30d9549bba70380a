"""Evaluation building blocks on hand-computed toy cases: windows, batched scoring with a fake model of known
log-probs, the `evaluate` metric modules, the wikitext detokenizer, LAMBADA requests and the shipped data."""

import gzip
import hashlib
import math
from types import SimpleNamespace

import pytest
import torch

from gpt2_owt.eval import data as eval_data
from gpt2_owt.eval.scoring import score_windows
from gpt2_owt.eval.tasks import guide_nll_sums, lambada_request, load_metric, wikitext_detokenizer
from gpt2_owt.eval.windows import Window, contiguous_windows, loglikelihood_window, rolling_windows, sliding_windows

V, P = 8, 6  # fake vocabulary and positions


class FakeLM(torch.nn.Module):
    """logits(token x at position p) = A[x] + B[p]: every log-prob is known in closed form."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor):
        super().__init__()
        self.base_model = _OneHotBody()
        self.head = torch.nn.Linear(V + P, V, bias=False)
        self.head.weight.data = torch.cat([A, B]).T.contiguous()
        self.A, self.B = A, B
        self.device = torch.device("cpu")

    def get_output_embeddings(self):
        return self.head

    def logprob(self, x: int, p: int, target: int) -> float:
        return float(torch.log_softmax((self.A[x] + self.B[p]).double(), -1)[target])


class _OneHotBody(torch.nn.Module):
    def forward(self, input_ids, position_ids):
        hidden = torch.cat([torch.nn.functional.one_hot(input_ids, V), torch.nn.functional.one_hot(position_ids, P)], -1)
        return SimpleNamespace(last_hidden_state=hidden.float())


@pytest.fixture
def fake_lm():
    g = torch.Generator().manual_seed(0)
    return FakeLM(torch.randn(V, V, generator=g), torch.randn(P, V, generator=g))


# ------------------------------------------------------------------------------------------------ windows

def test_rolling_windows_boundaries_carry_over_and_right_aligned_last_window():
    t = [1, 2, 3, 4, 5, 6, 7]
    assert rolling_windows(t, prefix_token=0, max_length=3) == [
        Window([0, 1, 2], [1, 2, 3], 3),  # [EOT] + t[:L-1] scores t[0:L]
        Window([3, 4, 5], [4, 5, 6], 3),  # next L tokens, reading t[end-L-1:end-1]: token 3 carried over
        Window([4, 5, 6], [5, 6, 7], 1),  # last window right-aligned: full context, only t[6] scored
    ]
    assert rolling_windows([5, 6], 0, 3) == [Window([0, 5], [5, 6], 2)]
    assert rolling_windows([], 0, 3) == []
    # every token scored exactly once, in order
    windows = rolling_windows(list(range(1, 40)), 0, 5)
    assert [tok for w in windows for tok in w.target_ids[len(w.target_ids) - w.num_scored:]] == list(range(1, 40))


def test_loglikelihood_window_truncates_context_from_the_left():
    assert loglikelihood_window([1, 2, 3, 4], [5, 6], max_length=3) == Window([3, 4, 5], [4, 5, 6], 2)
    assert loglikelihood_window([1], [2, 3], max_length=8) == Window([1, 2], [2, 3], 2)


def test_sliding_windows_follow_the_transformers_guide():
    windows, loss_tokens = sliding_windows(list(range(10)), max_length=4, stride=2)
    assert windows == [
        Window([0, 1, 2], [1, 2, 3], 3),  # first window: all labels valid, the shift drops one
        Window([2, 3, 4], [3, 4, 5], 2),  # trg_len = end - prev_end = 2
        Window([4, 5, 6], [5, 6, 7], 2),
        Window([6, 7, 8], [7, 8, 9], 2),
    ]
    assert loss_tokens == [3, 1, 1, 1]  # the guide's (labels != -100).sum() - batch_size
    windows, loss_tokens = sliding_windows(list(range(9)), max_length=4, stride=4)  # 1-token tail: NaN in the guide
    assert windows == [Window([0, 1, 2], [1, 2, 3], 3), Window([4, 5, 6], [5, 6, 7], 3)] and loss_tokens == [3, 3]
    with pytest.raises(ValueError):
        sliding_windows(list(range(9)), max_length=4, stride=5)


def test_contiguous_windows_are_nanogpt_blocks():
    import numpy as np

    tokens = np.arange(10, dtype=np.uint16)
    windows = contiguous_windows(tokens, max_length=4)
    assert [(list(w.input_ids), list(w.target_ids), w.num_scored) for w in windows] == [
        ([0, 1, 2, 3], [1, 2, 3, 4], 4), ([4, 5, 6, 7], [5, 6, 7, 8], 4), ([8], [9], 1)]
    assert contiguous_windows(np.arange(1), 4) == []


# ------------------------------------------------------------------------------------------------ scoring

def test_scoring_matches_hand_computed_logprobs_any_batch_size(fake_lm):
    f = fake_lm.logprob
    windows = rolling_windows([1, 2, 3, 4, 5, 6, 7], prefix_token=0, max_length=3)
    expected = [
        f(0, 0, 1) + f(1, 1, 2) + f(2, 2, 3),
        f(3, 0, 4) + f(4, 1, 5) + f(5, 2, 6),
        f(6, 2, 7),  # only the last position of the right-aligned window, at position 2
    ]
    for batch_size in (1, 2, 3):
        scores = score_windows(fake_lm, windows, batch_size)
        assert [s.logprob for s in scores] == pytest.approx(expected, rel=1e-6)
    short = Window([3], [4], 1)  # padded next to longer windows: positions and masking must not leak
    assert score_windows(fake_lm, [windows[0], short], 2)[1].logprob == pytest.approx(f(3, 0, 4), rel=1e-6)


def test_greedy_and_last_token_checks():
    A = torch.full((V, V), -5.0)
    for x in range(V):
        A[x, (x + 1) % V] = 5.0  # argmax after x is x + 1
    lm = FakeLM(A, torch.zeros(P, V))
    scores = score_windows(lm, [
        loglikelihood_window([1, 2], [3, 4], 8),  # 2->3, 3->4: all greedy
        loglikelihood_window([1, 2], [3, 5], 8),  # 3->5 wrong, and it is the last token
        loglikelihood_window([1, 2], [4, 5], 8),  # 2->4 wrong, 4->5 right: last token correct only
    ], batch_size=2)
    assert [(s.greedy, s.last_correct) for s in scores] == [(True, True), (False, False), (False, True)]


def test_guide_accounting(fake_lm):
    windows, loss_tokens = sliding_windows([1, 2, 3, 4, 5, 6, 7, 1, 2, 3], max_length=4, stride=2)
    scores = score_windows(fake_lm, windows, 4)
    means = [-s.logprob / w.num_scored for s, w in zip(scores, windows)]
    assert guide_nll_sums(scores, windows, loss_tokens) == pytest.approx([m * n for m, n in zip(means, loss_tokens)])


# ------------------------------------------------------------------------------------------------ metrics

def test_document_perplexity_module():
    out = load_metric("document_perplexity").compute(loglikelihoods=[-2.0, -4.0], words=[1, 2], bytes=[3, 5])
    assert out["word_perplexity"] == pytest.approx(math.exp(6 / 3), rel=1e-12)
    assert out["byte_perplexity"] == pytest.approx(math.exp(6 / 8), rel=1e-12)
    assert out["bits_per_byte"] == pytest.approx(6 / 8 / math.log(2), rel=1e-12)


def test_target_loglikelihood_module():
    out = load_metric("target_loglikelihood").compute(
        loglikelihoods=[-1.0, -2.0, -6.0], is_greedy=[True, False, False], last_token_correct=[True, True, False])
    assert out == pytest.approx({"acc": 1 / 3, "perplexity": math.exp(3.0), "acc_last_token": 2 / 3})


def test_token_perplexity_module():
    out = load_metric("token_perplexity").compute(nll_sums=[3.0, 1.5], token_counts=[2, 1])
    assert out == pytest.approx({"loss": 1.5, "perplexity": math.exp(1.5)})


# ------------------------------------------------------------------------------------------------ text handling

@pytest.mark.parametrize("raw, expected", [
    ("The 1 @,@ 000 km @-@ long road , built in 1990 @.@ 5 .", "The 1,000 km-long road, built in 1990.5 ."),
    ("He said : \" it is ( very ) good \" ; then left .", "He said: \"it is (very) good\"; then left ."),
    (" = = Career = = \n He was 5 ° C in N years .", " == Career ==\nHe was 5°C in 1 years ."),
    # the harness's quote regex pairs the two apostrophes and eats a real space: reproduced, not fixed
    ("the players ' union and John 's car", "the players'union and John's car"),
])
def test_wikitext_detokenizer(raw, expected):
    assert wikitext_detokenizer(raw) == expected


def test_lambada_request_moves_trailing_spaces_to_the_target():
    assert lambada_request("he saw the dog") == ("he saw the", " dog")
    assert lambada_request("he saw the  dog") == ("he saw the", "  dog")


# ------------------------------------------------------------------------------------------------ data

def test_wikitext_pages_are_the_62_harness_documents(original_files):
    pages = eval_data.wikitext_pages().items
    raw = (original_files / "wikitext-2-raw-v1" / "wiki.test.raw").read_bytes().decode("utf-8")
    assert len(pages) == 62
    assert " \n" + "\n".join(pages) == raw  # the document-level dataset's relation to the raw file
    assert pages[0].startswith(" = Robert Boulter = \n") and all(p.startswith(" = ") for p in pages)


def test_wikitext_rows_are_the_hub_rows():
    rows = eval_data.wikitext_rows().items
    assert len(rows) == 4358 and rows[:2] == ["", " = Robert Boulter = \n"]


def test_lambada_has_5153_examples(original_files):
    texts = eval_data.lambada_texts().items
    assert len(texts) == 5153
    plain = (original_files / "lambada_openai" / "lambada_test_plain_text.txt").read_text(encoding="utf-8").splitlines()
    assert [t.split(" ")[-1].lower().strip(".,!?\"'") for t in texts[:50]] == [p.split()[-1] for p in plain[:50]]


@pytest.mark.parametrize("shipped, original", [
    ("wiki.test.raw.gz", "wikitext-2-raw-v1/wiki.test.raw"), ("lambada_test.jsonl.gz", "lambada_openai/lambada_test.jsonl")])
def test_shipped_copies_are_byte_identical(shipped, original):
    from conftest import original_sha256

    content = gzip.decompress((eval_data.DATA_DIR / shipped).read_bytes())
    assert hashlib.sha256(content).hexdigest() == original_sha256()[original]


def test_hub_source_reads_the_harness_datasets(monkeypatch):
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return {"page": ["p1", "p2"], "text": ["t1"]}

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    assert eval_data.wikitext_pages("hub").items == ["p1", "p2"]
    assert eval_data.wikitext_rows("hub").source == "hub:Salesforce/wikitext/wikitext-2-raw-v1"
    assert eval_data.lambada_texts("hub").items == ["t1"]
    assert calls == [("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test"),
                     ("Salesforce/wikitext", "wikitext-2-raw-v1", "test"), ("EleutherAI/lambada_openai", "default", "test")]


def test_hub_source_offline_is_a_user_error(monkeypatch, tmp_path):
    from gpt2_owt.core.errors import UserError

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)  # as in CI and here: no Hub access
    with pytest.raises(UserError, match="cannot load EleutherAI/lambada_openai"):
        eval_data.lambada_texts("hub")
