"""The wheelhouse of the GPU machine, which reaches no package registry and lacks albumentations, pycocotools and
jsonargparse: ``download_wheels`` fills it here, where PyPI is reachable (cp312 manylinux wheels of them and their
missing dependencies); ``ensure_packages`` installs it there (pip --no-index --no-deps --target) when an import is
missing. Standard library only: it runs before those packages can be imported.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

# What the GPU image lacks (KINDS.md's package list): distribution name -> module it provides.
# typing-extensions is on that image, but pydantic here wants >= 4.16, so a copy travels too.
WHEEL_PACKAGES = {
    "albumentations": "albumentations", "albucore": "albucore", "simsimd": "simsimd", "stringzilla": "stringzilla",
    "pydantic": "pydantic", "pydantic-core": "pydantic_core", "annotated-types": "annotated_types",
    "typing-inspection": "typing_inspection", "typing-extensions": "typing_extensions",
    "pycocotools": "pycocotools",
    "jsonargparse": "jsonargparse", "docstring-parser": "docstring_parser", "typeshed-client": "typeshed_client",
}
# Imports that must work for detkit (jsonargparse[signatures] is what LightningCLI checks for).
NEEDED_MODULES = ("albumentations", "albucore", "pydantic", "pycocotools", "jsonargparse", "docstring_parser",
                  "typeshed_client")
PLATFORMS = ([f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17, 12, 5)]
             + ["manylinux2014_x86_64", "manylinux1_x86_64"])


class PackagesMissing(RuntimeError):
    """detkit's dependencies cannot be made importable; the message says what is missing and what to do."""


def normalised_name(name: str) -> str:
    """A distribution name as wheel file names spell it (``pydantic-core`` -> ``pydantic_core``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_project(path: Path) -> str:
    """The normalised distribution name of a wheel file."""
    return normalised_name(path.name.split("-")[0])


def download_wheels(folder: Path, python_version: str) -> int:
    """pip download (no deps, binaries only) each WHEEL_PACKAGES at the version installed here, for CPython
    ``python_version`` on manylinux x86-64; older files of the same packages are removed (pip refuses two
    versions of one package in one install). Prints the list and the total size; returns pip's exit status."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for name in WHEEL_PACKAGES:
        try:
            specs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            specs.append(name)
    for old in folder.glob("*.whl"):
        if wheel_project(old) in {normalised_name(n) for n in WHEEL_PACKAGES}:
            old.unlink()
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    print("$", " ".join(command + specs), flush=True)
    rc = subprocess.call(command + specs)
    wheels = sorted(folder.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 1e6:6.2f} MB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {folder}/ "
          f"(carry '{folder.name}' in the device call; the limit is 64 MiB with the working tree)")
    return rc


def _importable(modules) -> list[str]:
    importlib.invalidate_caches()
    return [m for m in modules if importlib.util.find_spec(m) is not None]


def ensure_packages(wheels: Path, site_dir: Path, force: bool) -> tuple[list[str], str]:
    """Make NEEDED_MODULES importable in this process, installing the wheelhouse into ``site_dir`` when one is
    missing (or always, with ``force``).

    Returns (the PYTHONPATH entries child processes need, a line saying what was done); raises PackagesMissing
    naming what is missing when it cannot.
    """
    missing = [m for m in NEEDED_MODULES if m not in _importable([m])]
    if not missing and not force:
        return [], "all packages importable, no wheels installed"
    if site_dir.is_dir() and not force:  # a warm machine that ran this before
        sys.path.insert(0, str(site_dir))
        if len(_importable(missing)) == len(missing):
            return [str(site_dir)], f"packages from {site_dir} (installed earlier)"
        sys.path.remove(str(site_dir))
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        raise PackagesMissing(f"FAIL: missing Python packages {missing} and no wheels in {wheels}/: run "
                              f"`make gpu-wheels` where PyPI is reachable and carry '{wheels.name}' with the call")
    projects = Counter(wheel_project(w) for w in found)
    twice = sorted(p for p, count in projects.items() if count > 1)
    if twice:
        raise PackagesMissing(f"FAIL: two versions of {twice} in {wheels}/: keep one of each "
                              "(make gpu-wheels cleans them)")
    site_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site_dir),
               *map(str, found)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PackagesMissing(f"FAIL: pip could not install the wheels of {wheels}/ (rc {result.returncode}):\n"
                              f"{result.stdout}{result.stderr}")
    sys.path.insert(0, str(site_dir))
    still = sorted(set(NEEDED_MODULES) - set(_importable(NEEDED_MODULES)))
    if still:
        raise PackagesMissing(f"FAIL: after installing {len(found)} wheels into {site_dir}, {still} still do not "
                              "import")
    return [str(site_dir)], f"installed {len(found)} wheels from {wheels}/ into {site_dir}"
