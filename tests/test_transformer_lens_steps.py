"""TransformerLens by step: `load_transformer_lens(run_dir_or_repo, step=N)` and `available_steps`, on a real run
folder and on the local Hub server (subprocess with HF_ENDPOINT, as in tests/test_upload.py)."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from gpt2_owt.core.errors import UserError
from helpers.hub import run_upload
from helpers.training import load_export

pytest.importorskip("transformer_lens", reason='TransformerLens not installed (pip install -e ".[interp]")')

from gpt2_owt.modeling.interp import available_steps, load_transformer_lens  # noqa: E402

pytestmark = pytest.mark.slow

IDS = torch.tensor([[15496, 995, 11, 428, 318, 257, 1332, 13]])


def hf_log_probs(folder):
    with torch.no_grad():
        return load_export(folder)(IDS).logits.log_softmax(-1)


@pytest.mark.timeout(600)
def test_local_run_by_step(published_inputs):
    _, hf = published_inputs
    run = hf.parent
    # the last step (2) has no hf/step2 of its own: it is addressable by its number all the same (hf/final)
    assert available_steps(run) == [0, 1, 2] == available_steps(hf)
    for step, folder in ((0, "step0"), (1, "step1"), (2, "final")):
        bridge = load_transformer_lens(run, step=step)
        with torch.no_grad():
            diff = (bridge(IDS).log_softmax(-1) - hf_log_probs(hf / folder)).abs().max().item()
        assert diff < 1e-5, (step, diff)
    with pytest.raises(UserError, match=r"has no checkpoint of step 7; available: step0, step1, step2 \(final\)"):
        load_transformer_lens(run, step=7)


@pytest.mark.timeout(900)
def test_hub_repo_by_step(hub, published_inputs):
    release, hf = published_inputs
    repo = "alice/gpt2-owt-tl"
    assert run_upload(hub, release, "--repo_id", repo, "--checkpoints", hf).returncode == 0
    code = textwrap.dedent(f"""
        import json, torch
        from gpt2_owt.core.errors import UserError
        from gpt2_owt.modeling.interp import available_steps, load_transformer_lens
        ids = torch.tensor({IDS.tolist()})
        out = {{"steps": available_steps("{repo}")}}
        with torch.no_grad():
            out["log_probs"] = load_transformer_lens("{repo}", step=1)(ids).log_softmax(-1)[0, :, :5].tolist()
            out["last"] = load_transformer_lens("{repo}", step=2)(ids).log_softmax(-1)[0, :, :5].tolist()
        try:
            load_transformer_lens("{repo}", step=9)
        except UserError as e:
            out["error"] = str(e)
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=hub.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["steps"] == [0, 1, 2]  # the release on main is step 2, addressable by its number
    remote = torch.tensor(out["log_probs"])
    assert (remote - hf_log_probs(hf / "step1")[0, :, :5]).abs().max().item() < 1e-5
    assert (torch.tensor(out["last"]) - hf_log_probs(hf / "final")[0, :, :5]).abs().max().item() < 1e-5
    assert out["error"] == f"{repo} has no checkpoint of step 9; available: step0, step1, step2 (main)"
