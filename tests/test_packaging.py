# The distribution installs one import package, `millpond`: its subpackage list in pyproject.toml matches the tree,
# every module imports its siblings through `millpond.`, and a regular install puts nothing else in site-packages.
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("broker", "client", "bench")


def test_packages_listed_in_pyproject_are_the_tree():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"millpond"} | {
        "millpond." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL for p in (ROOT / top).rglob("__init__.py")
    }
    assert listed == on_disk


@pytest.mark.parametrize("top", TOP_LEVEL + ("tests", "examples"))
def test_no_module_imports_a_generic_top_level_name(top):
    bad = []
    for path in (ROOT / top).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in TOP_LEVEL]
    assert bad == []


@pytest.mark.slow
def test_wheel_holds_only_the_millpond_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("millpond-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"millpond", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "millpond/__main__.py" in names  # `python -m millpond`


def test_python_dash_m_millpond_is_the_command_line():
    from millpond import __version__

    out = subprocess.run([sys.executable, "-m", "millpond", "--version"], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, f"millpond {__version__}"), out
    out = subprocess.run([sys.executable, "-m", "millpond", "topics", "list", "-b", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("millpond topics: "), out  # the command's own errors
