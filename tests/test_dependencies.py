"""``environment.yml`` (what a conda-based cluster user installs) and ``pyproject.toml`` (pip, the CI venv) name
the same dependency set: the same packages with the same version specifiers. pytest and pytest-timeout are the
``test`` extra in pyproject (not runtime dependencies) and plain dependencies in environment.yml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
NOT_DEPENDENCIES = {"python", "pip"}  # in environment.yml: the interpreter and the installer
TEST_TOOLS = {"pytest", "pytest-timeout"}

Deps = dict[str, SpecifierSet]


def _parse(spec: str, source: str) -> tuple[str, SpecifierSet]:
    """PEP 508 ``name<specifiers>``; conda's ``name=1.2`` (meaning 1.2.*) is read as ``name==1.2.*``."""
    conda_pin = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*=\s*([0-9][^=<>!~,\s]*)\s*", spec)
    if conda_pin:
        spec = f"{conda_pin[1]}=={conda_pin[2]}.*"
    try:
        req = Requirement(spec)
    except InvalidRequirement as e:
        raise ValueError(f"{source}: cannot parse dependency {spec!r}: {e}") from e
    return canonicalize_name(req.name), req.specifier


def _collect(specs: list[str], source: str, into: Deps) -> Deps:
    for spec in specs:
        name, specifier = _parse(spec, source)
        if name in into:
            raise ValueError(f"{source}: {name!r} is listed twice")
        into[name] = specifier
    return into


def pyproject_deps(path: Path) -> tuple[Deps, Deps]:
    """(runtime dependencies, the ``test`` extra) of a pyproject.toml."""
    project = tomllib.loads(path.read_text())["project"]
    runtime = _collect(list(project.get("dependencies", [])), f"{path} [project.dependencies]", {})
    test = _collect(list(project.get("optional-dependencies", {}).get("test", [])), f"{path} [test extra]", {})
    return runtime, test


def environment_deps(path: Path) -> tuple[Deps, str | None]:
    """(every conda and pip dependency except python and pip, the python spec) of an environment.yml."""
    deps: Deps = {}
    python: str | None = None
    for entry in yaml.safe_load(path.read_text()).get("dependencies", []):
        if isinstance(entry, dict):  # {"pip": [...]}
            _collect(list(entry.get("pip", [])), f"{path} (pip)", deps)
            continue
        name, specifier = _parse(str(entry), str(path))
        if name == "python":
            python = str(entry)
        elif name not in NOT_DEPENDENCIES:
            _collect([str(entry)], str(path), deps)
    return deps, python


def dependency_differences(pyproject: Path, environment: Path) -> list[str]:
    """Human-readable differences between the two files' dependency sets (empty when they agree)."""
    runtime, test = pyproject_deps(pyproject)
    env, _ = environment_deps(environment)
    wanted = {**runtime, **test}
    problems = [f"{n}: only in {pyproject.name} ({wanted[n] or 'any version'})" for n in sorted(wanted.keys() - env.keys())]
    problems += [f"{n}: only in {environment.name} ({env[n] or 'any version'})" for n in sorted(env.keys() - wanted.keys())]
    problems += [
        f"{n}: {pyproject.name} says {wanted[n] or 'any version'!s}, {environment.name} says {env[n] or 'any version'!s}"
        for n in sorted(wanted.keys() & env.keys())
        if wanted[n] != env[n]
    ]
    return problems


def test_environment_and_pyproject_name_the_same_dependencies() -> None:
    problems = dependency_differences(ROOT / "pyproject.toml", ROOT / "environment.yml")
    assert not problems, "environment.yml and pyproject.toml disagree:\n" + "\n".join(problems)


def test_test_tools_are_an_extra_in_pyproject_and_plain_in_environment() -> None:
    runtime, test = pyproject_deps(ROOT / "pyproject.toml")
    env, _ = environment_deps(ROOT / "environment.yml")
    assert TEST_TOOLS <= test.keys(), f"pyproject's [test] extra lacks {TEST_TOOLS - test.keys()}"
    assert not TEST_TOOLS & runtime.keys(), "test tools must not be runtime dependencies"
    assert TEST_TOOLS <= env.keys()


def test_environment_python_satisfies_requires_python() -> None:
    requires = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    _, python = environment_deps(ROOT / "environment.yml")
    assert python is not None, "environment.yml must pin python"
    version = re.search(r"[0-9][0-9.]*", python)
    assert version is not None and Version(version[0]) in requires, f"{python} vs requires-python {requires}"


def test_differences_are_found_and_named(tmp_path: Path) -> None:
    """The check itself can fail: a version drift, a package missing on either side, a conda '=' pin."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname="x"\ndependencies=["torch==2.14.1", "numpy>=1.26", "pandas"]\n'
                         '[project.optional-dependencies]\ntest=["pytest>=8"]\n')
    environment = tmp_path / "environment.yml"
    environment.write_text("dependencies:\n  - python=3.11\n  - pip\n  - numpy=1.26\n  - pytest>=8\n"
                           "  - pip:\n      - torch==2.13.0\n      - hydra-core==1.3.8\n")
    problems = "\n".join(dependency_differences(pyproject, environment))
    assert "pandas: only in pyproject.toml" in problems
    assert "hydra-core: only in environment.yml" in problems
    assert "torch: pyproject.toml says ==2.14.1, environment.yml says ==2.13.0" in problems
    assert "numpy: pyproject.toml says >=1.26, environment.yml says ==1.26.*" in problems
    assert "pytest" not in problems


def test_unparseable_or_duplicate_entries_are_errors_naming_them(tmp_path: Path) -> None:
    environment = tmp_path / "environment.yml"
    environment.write_text("dependencies:\n  - numpy>=1\n  - pip:\n      - numpy>=2\n")
    with pytest.raises(ValueError, match="'numpy' is listed twice"):
        environment_deps(environment)
    environment.write_text("dependencies:\n  - 'torch ==> 2'\n")
    with pytest.raises(ValueError, match="torch ==> 2"):
        environment_deps(environment)
