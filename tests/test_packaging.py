"""pyproject.toml + setup.py: the distribution holds every package of the project, its
dependencies are requirements.txt's pins, and requirements.txt installs the project itself."""

import importlib.util
import os
import tomllib

import setuptools

from tests.conftest import REPO_ROOT

NOT_SHIPPED = {"tests", "docs", "runs", "tmp", "build"}


def _pyproject() -> dict:
  with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def _setup_module():
  """setup.py as a module named for what it is (importing it does not run setup())."""
  spec = importlib.util.spec_from_file_location("project_setup",
                                                os.path.join(REPO_ROOT, "setup.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _folders_with_modules() -> set[str]:
  """Dotted names of the repo's folders that hold .py files, outside tests/ and ignored ones."""
  found = set()
  for folder, subfolders, files in os.walk(REPO_ROOT):
    subfolders[:] = [s for s in subfolders
                     if not s.startswith((".", "_")) and s not in NOT_SHIPPED]
    rel = os.path.relpath(folder, REPO_ROOT)
    if rel != "." and any(f.endswith(".py") for f in files):
      found.add(rel.replace(os.sep, "."))
  return found


def test_every_package_is_in_the_distribution():
  include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
  shipped = set(setuptools.find_namespace_packages(where=REPO_ROOT, include=include))
  assert {"shared", "shared.process", "shared.layers", "benchmarks"} <= shipped
  assert _folders_with_modules() <= shipped
  assert "tests" not in shipped


def test_dependencies_are_the_pins_and_the_last_line_installs_the_project():
  with open(os.path.join(REPO_ROOT, "requirements.txt")) as f:
    text = f.read()
  lines = [line.strip() for line in text.splitlines()
           if line.strip() and not line.startswith("#")]
  assert lines[-1] == "-e ."
  pins = _setup_module().pinned_requirements(text)
  assert pins == lines[:-1]
  assert all("==" in pin for pin in pins), pins
  assert "dependencies" in _pyproject()["project"]["dynamic"]
