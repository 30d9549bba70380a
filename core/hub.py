"""The Hub, one owner for every stage: the one translation of a failed Hub call into one line, the token, and the
layout of a checkpoint series (branch `stepN` holds the export of step N, names: core/steps.py).

upload.py writes the series; eval.series, tracing.curve and modeling.interp read it, all through this module, so the
branch name and the listing (with its one-line errors) have one owner. Every Hub call site of the pipeline runs
inside `hub_errors(repo_id)`: offline mode, an unreachable Hub, a missing repo/revision/file or an HTTP error is one
UserError naming the repo (and HF_HUB_OFFLINE when it is set), never OfflineModeIsEnabled or a ConnectError
traceback; a write (`hub_errors(repo_id, token=token, writing=True)`: upload, memorization --push_to_hub) turns every
failure into one line that never holds the token. Imports huggingface_hub only when it is used.
"""

import contextlib
import os

from .errors import UserError, first_line
from .steps import parse_step_name

OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in OFFLINE_VALUES


def _is_network_error(e: BaseException) -> bool:
    """A connection that failed (refused, reset, timed out, DNS), whichever HTTP client raised it."""
    names = {cls.__name__ for cls in type(e).__mro__}
    return isinstance(e, (ConnectionError, TimeoutError)) or bool(
        names & {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "TransportError",
                 "NetworkError", "ProxyError"})


def describe_hub_error(e: BaseException, repo_id: str, revision: str | None = None, *,
                       writing: bool = False) -> str | None:
    """One line for a failed Hub call about `repo_id`. A read returns None for what is not a Hub failure (let it
    propagate); a write (which a rerun resumes: finished files are skipped) describes every failure."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id}" + (f" revision {revision}" if revision else "")
    causes = [e, e.__cause__, e.__context__]
    status = getattr(getattr(e, "response", None), "status_code", None)
    if offline() and any(isinstance(c, (OfflineModeIsEnabled, LocalEntryNotFoundError)) for c in causes):
        return (f"cannot reach the Hub for {where}: HF_HUB_OFFLINE is set and it is not in the local cache (unset "
                "HF_HUB_OFFLINE to download it, or give a local folder)")
    if isinstance(e, GatedRepoError):
        return f"Hub repo {repo_id} is gated: accept its terms on the Hub and set HF_TOKEN"
    if isinstance(e, RepositoryNotFoundError):
        return f"Hub repo {repo_id} not found (or not accessible with your token: set HF_TOKEN for a private repo)"
    if isinstance(e, RevisionNotFoundError):
        return f"Hub repo {repo_id} has no revision {revision or ''}".rstrip() + f" ({first_line(e)})"
    if isinstance(e, HfHubHTTPError) and status == 401:
        return "the Hub rejected the token (401): it is invalid or expired; set HF_TOKEN or run `hf auth login`"
    if writing and isinstance(e, HfHubHTTPError) and status == 403:
        return (f"no write access to {repo_id} (403): the token's user cannot write to namespace "
                f"'{repo_id.split('/')[0]}', or the token is read-only")
    if writing:
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:600]
        cause = f" ({type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ and not isinstance(
            e, HfHubHTTPError) else ""
        return (f"upload failed: {type(e).__name__}: {text}{cause}. Rerun the same command to resume: finished files "
                "are skipped")
    if isinstance(e, LocalEntryNotFoundError) or any(_is_network_error(c) for c in causes if c is not None) or (
            isinstance(e, OSError) and "couldn't connect to" in str(e)):
        return (f"cannot reach the Hub for {where} ({first_line(e)}): check the network and HF_ENDPOINT, or set "
                "HF_HUB_OFFLINE=1 to use only the local cache")
    if isinstance(e, HfHubHTTPError):
        return f"the Hub refused a request for {where}: {first_line(e)}"
    return None


def scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None, *, token: str | None = None, writing: bool = False):
    """Turn a failed Hub call inside the block into one UserError about `repo_id` (see describe_hub_error), with
    `token` scrubbed from it (a server may echo the Authorization header)."""
    try:
        yield
    except UserError as e:
        if token and token in str(e):
            raise UserError(scrub(str(e), token)) from None
        raise
    except Exception as e:
        message = describe_hub_error(e, repo_id, revision, writing=writing)
        if message is None:
            raise
        raise UserError(scrub(message, token)) from None


def get_token() -> str:
    """The Hugging Face token of a write (HF_TOKEN or `hf auth login`); one UserError without one."""
    from huggingface_hub import get_token as hf_get_token

    token = hf_get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (use --dry_run to preview)")
    return token


def repo_refs(repo_id: str) -> list[str]:
    """Names of the repo's branches, then its tags; a missing repo or an HTTP failure is one UserError."""
    from huggingface_hub import HfApi

    with hub_errors(repo_id):
        refs = HfApi().list_repo_refs(repo_id)
    return [b.name for b in refs.branches] + [t.name for t in refs.tags]


def step_branches(repo_id: str) -> list[tuple[int, str]]:
    """(step, branch) of every `step{N}` branch of the repo, by step."""
    return sorted((step, name) for name in repo_refs(repo_id) if (step := parse_step_name(name)) is not None)
