"""The upload and verify tests' side of the local Hub (helpers/hub_server.py): two users' tokens, `upload.py` run
against the server (never showing a token), and a published file's bytes read straight from the server's state."""

import subprocess
import sys

from helpers.training import REPO_ROOT

TOKEN = "hf_aliceSecretToken0123456789"
BOB_TOKEN = "hf_bobSecretToken0123456789"


def run_upload(hub, *argv, token=TOKEN):
    env = dict(hub.env)
    env.pop("HF_TOKEN")
    if token is not None:
        env["HF_TOKEN"] = token
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "upload.py"), *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    for secret in (TOKEN, BOB_TOKEN):
        assert secret not in proc.stdout + proc.stderr
    return proc


def blob(hub, repo: str, branch: str, path: str) -> bytes:
    """The bytes of `path` on `branch` of `repo` as the server stores them."""
    return hub.state.blobs[hub.state.resolve(hub.state.repos[repo], branch).files[path].sha256]
