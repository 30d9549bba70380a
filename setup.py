"""Which packages ship: discovered, not listed (pyproject.toml holds everything else).

The repository root is the `gpt2_owt` package (package-dir `gpt2_owt = "."`), and pyproject.toml's `packages.find`
cannot put the `gpt2_owt.` prefix on what it finds, so discovery is here: every top-level folder with an
`__init__.py` (a room: core, modeling, training, ...) and every folder below it (its subpackages and its data
folders, as namespace packages). A new room or data folder ships without being named anywhere; tests, docs,
benchmarks and scripts have no `__init__.py` and do not.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
ROOMS = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
PACKAGES = ["gpt2_owt"] + [f"gpt2_owt.{room}" for room in ROOMS] + [
    f"gpt2_owt.{room}.{sub}" for room in ROOMS
    for sub in find_namespace_packages(where=str(ROOT / room), exclude=["__pycache__", "*.__pycache__"])]



class BuildPy(build_py):
    """The root's modules are the top-level verbs (cli.py, upload.py), not this file."""

    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir)
                if not (package == "gpt2_owt" and m[1] == "setup")]


setup(packages=PACKAGES, package_dir={"gpt2_owt": "."}, cmdclass={"build_py": BuildPy})
