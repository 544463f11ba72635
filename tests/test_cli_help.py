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


def test_every_name_in_the_catalog_builds_what_it_says():
    """The catalog is plain data; each name must resolve to the class, task or preset it names."""
    from minigpt_ptv2.core.prompt_method import PromptMethod
    from minigpt_ptv2.models.presets import PRESETS, preset
    from minigpt_ptv2.prompts import METHODS, make_method
    from minigpt_ptv2.training import TASKS, TRAIN_METHODS

    cfg = preset("bert-tiny")
    for name, entry in catalog.METHODS.items():
        method = make_method(name, cfg, 3)
        assert isinstance(method, PromptMethod) and type(method) is METHODS[name][0]
        assert type(method).__name__ == entry.where.split(":")[1]
        assert all(getattr(method, k, None) == v or k == "encoder" for k, v in entry.defaults.items())
    assert tuple(TRAIN_METHODS) == catalog.TRAIN_METHODS and set(TASKS) == set(catalog.TASKS)
    assert set(catalog.RECIPES) == set(catalog.TRAIN_METHODS)
    assert tuple(PRESETS) == catalog.PRESETS


def test_version_is_the_installed_distribution_version():
    from importlib.metadata import version

    assert minigpt_ptv2.__version__ == version("minigpt_ptv2")


def test_help_states_a_default_of_zero():
    import contextlib
    import io

    from minigpt_ptv2.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(["train", "--help"])
        except SystemExit:
            pass
    seed = out.getvalue().split("  --seed SEED", 1)[1].split("  --", 1)[0]
    assert "(default: 0)" in " ".join(seed.split())


def test_eval_and_predict_warn_about_a_changed_or_random_head(capsys):
    from minigpt_ptv2.cli._shared import warn_about_import
    warn_about_import({"imported_from": {"head": "adapter", "pooling_changed": True}})
    warn_about_import({"imported_from": {"head": "random"}})
    warn_about_import({})
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "virtual token 0" in err[0] and "at random" in err[1]
