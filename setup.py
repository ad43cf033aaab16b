"""The project's dependencies are the pins of requirements.txt.

Why not `[tool.setuptools.dynamic] dependencies = {file = ...}`: requirements.txt ends with
`-e .` (so `pip install -r requirements.txt` installs this project too), and setuptools would
read that pip option as a requirement. Here every line that is not a requirement (comments,
pip options such as `-e .`) is skipped; everything else is in pyproject.toml.
"""

import pathlib

import setuptools

REQUIREMENTS = pathlib.Path(__file__).resolve().with_name("requirements.txt")


def pinned_requirements(text: str) -> list[str]:
  """Requirement lines of a requirements file: no comments, blank lines or `-` options."""
  lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
  return [line for line in lines if line and not line.startswith(("#", "-"))]


if __name__ == "__main__":   # setuptools' build backend runs this file as __main__
  setuptools.setup(install_requires=pinned_requirements(REQUIREMENTS.read_text()))
