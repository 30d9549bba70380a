"""The Hub layout of a checkpoint series: branch `stepN` holds the export of step N (names: modeling/steps.py).

upload.py writes it; eval.series, tracing.curve and modeling.interp read it, all through this module, so the
branch name and the listing (with its one-line errors) have one owner. Imports huggingface_hub only when listing.
"""

from .errors import UserError, first_line
from .steps import parse_step_name

def repo_refs(repo_id: str) -> list[str]:
    """Names of the repo's branches, then its tags; a missing repo or an HTTP failure is one UserError."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        refs = HfApi().list_repo_refs(repo_id)
    except RepositoryNotFoundError:
        raise UserError(f"Hub repo {repo_id} not found (or not accessible with your token)") from None
    except HfHubHTTPError as e:
        raise UserError(f"cannot list the branches of {repo_id}: {first_line(e)}") from None
    return [b.name for b in refs.branches] + [t.name for t in refs.tags]


def step_branches(repo_id: str) -> list[tuple[int, str]]:
    """(step, branch) of every `step{N}` branch of the repo, by step."""
    return sorted((step, name) for name in repo_refs(repo_id) if (step := parse_step_name(name)) is not None)
