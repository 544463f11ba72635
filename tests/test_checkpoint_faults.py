"""A save killed at any moment leaves the old checkpoint or the new one, never neither, never a mix.

Each save runs in a forked child whose k-th file operation (os.write, os.fsync, os.replace,
os.unlink, os.ftruncate) ends the process with os._exit: no `finally`, no cleanup, as with
SIGKILL; an os.write is cut half-way first. k runs from 1 until the save gets through, so every
step of every save is a kill point. The parent then reads the folder as load_checkpoint does
and checks it holds exactly the old or exactly the new tensors (the new ones once the rename of
checkpoint.json has happened), and that the next save cleans up whatever the killed one left.

Also here: the folder lock (a second writer is refused, naming the folder and the other process;
a killed holder leaves no stale lock), in two processes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from minigpt_ptv2 import BertEncoder
from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.errors import MissingFileError, UserError
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.training import Head, TaskModel, save_checkpoint, set_trainable
from minigpt_ptv2.training import atomic
from minigpt_ptv2.training import state as run_state
from minigpt_ptv2.training.checkpoint import read_checkpoint
from minigpt_ptv2.training.lock import LOCK, FolderBusy, locked

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")]
KILLED = 77
CFG = preset("bert-tiny")


def tiny(seed: int) -> TaskModel:
    torch.manual_seed(seed)
    encoder = BertEncoder(CFG).attach(make_method("prefix", CFG, 2))
    model = TaskModel(encoder, {"sst2": Head(CFG.hidden_size, 2, "sequence")})
    set_trainable(model, "prefix")
    return model


def trained(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save(model, folder, tag: str):
    return save_checkpoint(model, folder, task="sst2", method="prefix", P=2, extra={"tag": tag})


def killed_at(k: int, write) -> bool:
    """Run write() in a forked child that dies at its k-th file operation; True if it died."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            count = [0]

            def cut(name, real):
                def op(*args):
                    count[0] += 1
                    if count[0] == k:
                        if name == "write":
                            real(args[0], bytes(args[1])[: max(1, len(args[1]) // 2)])
                        os._exit(KILLED)
                    return real(*args)
                return op
            for name in ("write", "fsync", "replace", "unlink", "ftruncate"):
                setattr(os, name, cut(name, getattr(os, name)))
            write()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, KILLED), f"the save failed by itself at kill point {k} (exit {code})"
    return code == KILLED


def holds(folder):
    """(tag, tensors) the folder loads as, or None when it holds no checkpoint."""
    try:
        meta, tensors = read_checkpoint(folder)
    except MissingFileError:
        return None
    return meta["tag"], tensors


def legacy(folder):
    """Rewrite checkpoint.json as saves before the `weights` field wrote it (checkpoint.safetensors)."""
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta.pop("weights") == "checkpoint.safetensors"
    (folder / "checkpoint.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("before", ["empty", "one-save", "fresh-name", "legacy"])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_checkpoint(tmp_path, before):
    old, new, third = tiny(1), tiny(2), tiny(3)
    expected = {"old": trained(old), "new": trained(new)}
    points = seen_new = 0
    for k in range(1, 100):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        if before != "empty":
            save(old, folder, "old")
        if before == "fresh-name":  # as a save killed between its two commits leaves it
            meta = json.loads((folder / "checkpoint.json").read_text())
            atomic.commit(folder, "checkpoint", trained(old), meta, plain=False)
            assert json.loads((folder / "checkpoint.json").read_text())["weights"].startswith("checkpoint-")
        if before == "legacy":
            legacy(folder)
        if not killed_at(k, lambda: save(new, folder, "new")):
            break
        points += 1
        got = holds(folder)
        if got is None:
            assert before == "empty", f"kill point {k}: the old checkpoint is gone"
        else:
            tag, tensors = got
            assert tag == "new" or (tag == "old" and before != "empty")
            assert tensors.keys() == expected[tag].keys()
            assert all(torch.equal(tensors[n], expected[tag][n]) for n in tensors), f"kill point {k}: mixed"
            assert not (tag == "old" and seen_new), f"kill point {k}: old again after the commit"
            seen_new += tag == "new"
        save(third, folder, "third")  # the next save: succeeds, and leaves only the plain pair
        meta, _ = read_checkpoint(folder)
        assert meta["tag"] == "third"
        left = sorted(p.name for p in folder.iterdir())
        assert left == ["checkpoint.json", "checkpoint.safetensors"], f"kill point {k}: left {left}"
    else:
        pytest.fail("the save never completed")
    # every step was a kill point: writing, syncing, the rename, the clean-up, the lock
    assert points >= 8 and seen_new >= 2, (points, seen_new)


def test_a_resume_state_save_killed_at_any_step_leaves_the_old_or_the_new_state(tmp_path):
    states = {tag: ({"format": run_state.FORMAT, "tag": tag}, {"x": torch.full((3,), float(i))})
              for i, tag in enumerate(("old", "new"))}
    for k in range(1, 100):
        run = tmp_path / f"k{k}"
        run.mkdir()
        run_state.save(run, *states["old"])
        if not killed_at(k, lambda: run_state.save(run, *states["new"])):
            break
        meta, tensors = run_state.atomic.read(run_state.folder(run), run_state.STEM)
        assert torch.equal(tensors["x"], states[meta["tag"]][1]["x"]), f"kill point {k}"
    assert k > 6


def test_a_save_over_a_checkpoint_passes_through_a_fresh_name_and_ends_plain(tmp_path, monkeypatch):
    save(tiny(1), tmp_path, "1")
    named, real = [], os.replace

    def replace(src, dst):  # what checkpoint.json names at each commit
        real(src, dst)
        named.append(json.loads((tmp_path / "checkpoint.json").read_text())["weights"])
    monkeypatch.setattr(os, "replace", replace)
    assert save(tiny(2), tmp_path, "2")["weights"] == "checkpoint.safetensors"
    assert len(named) == 2 and named[0].startswith("checkpoint-") and named[1] == "checkpoint.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]


# --- one writer per folder ----------------------------------------------------------------------

HOLDER = """
import sys
from minigpt_ptv2.training.lock import locked
with locked(sys.argv[1], "holder-for-the-test"):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes stdin or kills us
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path/out's lock."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield out, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_folder_and_the_other_process(holder):
    out, proc = holder
    with pytest.raises(FolderBusy) as info:
        save(tiny(1), out, "second")
    message = str(info.value)
    assert f"{out} is being written by another run (pid {proc.pid} on " in message
    assert "running 'holder-for-the-test'" in message
    assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing of ours written


def test_a_killed_holder_leaves_no_stale_lock(holder):
    out, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / LOCK).exists()  # the file stays; the kernel released the lock with the process
    save(tiny(1), out, "after")
    assert holds(out)[0] == "after" and not (out / LOCK).exists()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with locked(tmp_path, "outer"):
        save(tiny(1), tmp_path, "inner")  # save_checkpoint takes the same lock again
        assert (tmp_path / LOCK).exists()
    assert not (tmp_path / LOCK).exists()


def test_a_refused_save_is_a_user_error():
    assert issubclass(FolderBusy, UserError)
