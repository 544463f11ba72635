"""`--help` answers at once: no command imports torch until it runs, and the light catalog of
names the help is built from agrees with the classes behind the names."""
from __future__ import annotations

import subprocess
import sys

import minigpt_ptv2
from minigpt_ptv2 import catalog

# Runs every command's --help in one fresh interpreter, then reports which heavy modules were imported.
_PROBE = """
import contextlib, io, sys
from minigpt_ptv2.cli import commands, main
names = list(commands())
for argv in [["--help"], *[[n, "--help"] for n in names]]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 0, (argv, e.code)
    assert "usage:" in out.getvalue(), argv
print(",".join(names))
print(",".join(m for m in ("torch", "numpy", "tokenizers", "safetensors", "matplotlib") if m in sys.modules))
"""


def test_every_help_answers_without_importing_torch():
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names, heavy = done.stdout.split("\n")[:2]
    assert {"train", "eval", "predict", "demo", "trace", "params"} <= set(names.split(","))
    assert heavy == "", f"--help imported {heavy}: move that import into the command's run()"


def test_the_catalog_names_what_the_registries_build():
    from minigpt_ptv2.prompts import METHODS
    from minigpt_ptv2.prompts.base import POSITIONS
    from minigpt_ptv2.training import TASKS, TRAIN_METHODS

    assert list(METHODS) == list(catalog.METHODS)
    assert {name: desc for name, (_, _, desc) in METHODS.items()} == catalog.METHODS
    assert tuple(TRAIN_METHODS) == catalog.TRAIN_METHODS
    assert set(TASKS) == set(catalog.TASKS)
    assert tuple(POSITIONS) == catalog.POSITIONS
    assert set(catalog.DEFAULT_LR) == set(catalog.TRAIN_METHODS)


def test_version_is_the_installed_distribution_version():
    from importlib.metadata import version

    assert minigpt_ptv2.__version__ == version("minigpt_ptv2")
