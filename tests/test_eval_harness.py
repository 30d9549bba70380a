"""Our wikitext / lambada_openai numbers equal lm-evaluation-harness's own (HFLM, offline, local data files) on the
tiny model, to 1e-6 relative, whatever our batch size (1, 3, 16: batches of mixed lengths and a ragged last batch).
Needs the optional extra `harness` (lm-eval 0.4.13)."""

import functools
import json

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (pip install -e '.[harness]')")

from gpt2_owt.eval.data import wikitext_pages  # noqa: E402
from gpt2_owt.eval.evaluate import main  # noqa: E402
from gpt2_owt.eval.harness_tasks import run as write_tasks  # noqa: E402
from gpt2_owt.eval.tasks import wikitext_detokenizer  # noqa: E402
from helpers.models import save_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow

MAX_LENGTH = 100  # many rolling windows (and a partial last one) on the first WikiText document


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    return save_tiny_model(root / "tiny"), root, write_tasks(["--output_dir", str(root / "tasks")])


@functools.cache
def harness_metrics(model_dir, tasks_dir, task, limit, batch_size):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},max_length={MAX_LENGTH}", tasks=[task], limit=limit,
        batch_size=batch_size, device="cpu", task_manager=TaskManager(include_path=str(tasks_dir)),
    )
    return {k.split(",")[0]: v for k, v in out["results"][task].items() if k.endswith(",none") and "stderr" not in k}


def our_metrics(model_dir, tmp_path, task, limit, batch_size):
    out = tmp_path / f"{task}.json"
    main(["--model", str(model_dir), "--tasks", task, "--limit", str(limit), "--max_length", str(MAX_LENGTH),
          "--batch_size", str(batch_size), "--output", str(out)])
    return json.loads(out.read_text())["tasks"][task]["metrics"]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_wikitext_equals_the_harness(setup, tmp_path, batch_size):
    model_dir, root, tasks = setup
    assert tasks == ["wikitext_local", "lambada_openai_local"]
    ours = our_metrics(model_dir, tmp_path, "wikitext", 1, batch_size)
    theirs = harness_metrics(model_dir, root / "tasks", "wikitext_local", 1, 4)
    assert set(theirs) == set(ours)
    for metric, value in theirs.items():
        assert ours[metric] == pytest.approx(value, rel=1e-6), metric


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_lambada_openai_equals_the_harness(setup, tmp_path, batch_size):
    model_dir, root, _ = setup
    ours = our_metrics(model_dir, tmp_path, "lambada_openai", 40, batch_size)
    theirs = harness_metrics(model_dir, root / "tasks", "lambada_openai_local", 40, 8)
    assert theirs.keys() == {"acc", "perplexity"}
    for metric, value in theirs.items():
        assert ours[metric] == pytest.approx(value, rel=1e-6), metric


def test_detokenizer_equals_the_harness_on_every_page():
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer as harness_detokenizer

    pages = wikitext_pages().items
    assert [wikitext_detokenizer(p) for p in pages] == [harness_detokenizer({"page": p}) for p in pages]
