"""Package versions for provenance records (data manifest, run_info.json, results.json)."""

import platform
from importlib import metadata


def package_versions(names) -> dict[str, str | None]:
    """{"python": ..., name: installed version or None} for each distribution name."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
