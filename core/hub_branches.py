"""The Hub layout of a checkpoint series: branch `stepN` holds the export of step N (names: core/steps.py), and
the one translation of Hub failures into one line.

upload.py writes the series; eval.series, tracing.curve and modeling.interp read it, all through this module, so the
branch name and the listing (with its one-line errors) have one owner. Every Hub call site of the pipeline runs
inside `hub_errors(repo_id)`: offline mode, an unreachable Hub, a missing repo/revision/file or an HTTP error is one
UserError naming the repo (and HF_HUB_OFFLINE when it is set), never OfflineModeIsEnabled or a ConnectError
traceback. Imports huggingface_hub only when it is used.
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


def describe_hub_error(e: BaseException, repo_id: str, revision: str | None = None) -> str | None:
    """One line for a failed Hub call about `repo_id` (None: not a Hub failure, let it propagate)."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id}" + (f" revision {revision}" if revision else "")
    causes = [e, e.__cause__, e.__context__]
    if offline() and any(isinstance(c, (OfflineModeIsEnabled, LocalEntryNotFoundError)) for c in causes):
        return (f"cannot reach the Hub for {where}: HF_HUB_OFFLINE is set and it is not in the local cache (unset "
                "HF_HUB_OFFLINE to download it, or give a local folder)")
    if isinstance(e, GatedRepoError):
        return f"Hub repo {repo_id} is gated: accept its terms on the Hub and set HF_TOKEN"
    if isinstance(e, RepositoryNotFoundError):
        return f"Hub repo {repo_id} not found (or not accessible with your token: set HF_TOKEN for a private repo)"
    if isinstance(e, RevisionNotFoundError):
        return f"Hub repo {repo_id} has no revision {revision or ''}".rstrip() + f" ({first_line(e)})"
    if isinstance(e, LocalEntryNotFoundError) or any(_is_network_error(c) for c in causes if c is not None) or (
            isinstance(e, OSError) and "couldn't connect to" in str(e)):
        return (f"cannot reach the Hub for {where} ({first_line(e)}): check the network and HF_ENDPOINT, or set "
                "HF_HUB_OFFLINE=1 to use only the local cache")
    if isinstance(e, HfHubHTTPError):
        return f"the Hub refused a request for {where}: {first_line(e)}"
    return None


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None):
    """Turn a failed Hub call inside the block into one UserError about `repo_id` (see describe_hub_error)."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        message = describe_hub_error(e, repo_id, revision)
        if message is None:
            raise
        raise UserError(message) from None


def repo_refs(repo_id: str) -> list[str]:
    """Names of the repo's branches, then its tags; a missing repo or an HTTP failure is one UserError."""
    from huggingface_hub import HfApi

    with hub_errors(repo_id):
        refs = HfApi().list_repo_refs(repo_id)
    return [b.name for b in refs.branches] + [t.name for t in refs.tags]


def step_branches(repo_id: str) -> list[tuple[int, str]]:
    """(step, branch) of every `step{N}` branch of the repo, by step."""
    return sorted((step, name) for name in repo_refs(repo_id) if (step := parse_step_name(name)) is not None)
