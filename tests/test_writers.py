"""Every command that writes a folder, against every kind of folder it may be pointed at.

The table: each writer (train, train lm, import-peft for an encoder and a decoder, export-peft,
export-hf, figures, lessons, demo, pretrain) x each target (empty, holds a checkpoint, holds a
model, is the input folder, is a file, is read-only). A refusal is exit 2, one line "error: ..."
naming the folder, no model loaded and nothing changed byte for byte; an empty folder is written; with --overwrite the old content is
replaced whole (nothing of it stays beside the new files), except that train (which writes in
place, training/runfolder.py) never deletes files that are not its own; a folder the command
reads is refused with or without --overwrite.

Everything runs on tiny inputs (tests/tiny_world.py); pretrain trains a one-layer decoder for
three steps on 240 of the sample's sentences. figures and demo run their real checks
and their real guard, but their minutes of training and drawing are replaced by a stub that
writes the same file names (tests/test_plots.py and tests/test_demo.py run the real work).
After the table: what "atomic" means (outdir.py's swap, a failed write, a killed swap), train's
own rules (an old run kept until the new run's first checkpoint; a resume that remembers its
folders), and the machine's faults for real (a full disk, a file-size limit, a closed pipe).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "bad_inputs"))
import tiny_world  # noqa: E402
from harness import snapshot  # noqa: E402

from minigpt_ptv2 import outdir  # noqa: E402
from minigpt_ptv2.cli import demo as demo_cmd  # noqa: E402
from minigpt_ptv2.cli import figures as figures_cmd  # noqa: E402
from minigpt_ptv2.cli import main  # noqa: E402
from minigpt_ptv2.data.sample import SAMPLE_DIR, load_sst2_sample  # noqa: E402
from minigpt_ptv2.training import pretrain as pretrain_module  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
LESSONS = Path(__file__).resolve().parents[1] / "lessons"

TRAIN = ["--P", "2", "--epochs", "1", "--batch-size", "4", "--max-length", "16", "--no-progress"]
WRITERS = {  # name -> (argv for world w and target out, the input a target may be, what it writes)
    "train": (lambda w, out: ["train", "sst2", "prefix", *TRAIN, "--max-train", "4", "--max-dev", "2",
                              "--model-dir", w["bert"], "--data-dir", w["data"], "--out", out],
              "bert", {"checkpoint.json", "checkpoint.safetensors"}),
    "train lm": (lambda w, out: ["train", "lm", "prefix", *TRAIN, "--text-file", w["text"], "--model-dir", w["gpt2"],
                                 "--out", out], "gpt2", {"checkpoint.json", "checkpoint.safetensors"}),
    "import-peft": (lambda w, out: ["import-peft", w["adapter"], out, "--model-dir", w["bert"]], "adapter",
                    {"checkpoint.json", "checkpoint.safetensors"}),
    "import-peft lm": (lambda w, out: ["import-peft", w["lm_adapter"], out, "--model-dir", w["gpt2"]], "lm_adapter",
                       {"checkpoint.json", "checkpoint.safetensors"}),
    "export-peft": (lambda w, out: ["export-peft", w["ck"], out, "--model-dir", w["bert"]], "ck",
                    {"adapter_config.json", "adapter_model.safetensors"}),
    "export-hf": (lambda w, out: ["export-hf", w["full"], out, "--model-dir", w["bert"]], "bert",
                  {"config.json", "model.safetensors", "vocab.txt"}),
    "figures": (lambda w, out: ["figures", "--quick", "--no-progress", "--model-dir", w["bert"], "--data-dir",
                                w["data"], "--out", out], "bert", set(figures_cmd.FILES)),
    "lessons": (lambda w, out: ["lessons", "--out", out], "lessons", {"README.md", "notebooks", "solutions"}),
    "demo": (lambda w, out: ["demo", "--quick", "--model-dir", w["bert"], "--data-dir", w["data"], "--out", out],
             "bert", {"sst2_prefix", "prefix_attention.png"}),
    "pretrain": (lambda w, out: ["pretrain", "--layers", "1", "--hidden", "16", "--heads", "2", "--vocab-size", "300",
                                 "--context", "24", "--batch-size", "4", "--steps", "3", "--no-progress", "--out", out],
                 "sample", {"config.json", "model.safetensors", "tokenizer.json", "pretrain.json"}),
}
IN_PLACE = {"train", "train lm"}  # write in place: never delete files that are not a run's own


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world.build(tmp_path_factory.mktemp("world"))


@pytest.fixture(autouse=True)
def stub_work(monkeypatch):
    """figures' and demo's training and drawing, replaced by files of the same names; pretrain's
    text cut to 240 sentences (its real training, on them)."""
    def draw(out, *args):
        for name in figures_cmd.FILES:
            (out / name).write_bytes(b"\x89PNG new " + name.encode())
        return list(figures_cmd.FILES)

    def tour(args, model_dir, out, shown):
        (out / "sst2_prefix").mkdir()
        (out / "sst2_prefix" / "checkpoint.json").write_text("{}")
        (out / "prefix_attention.png").write_bytes(b"\x89PNG new")
        return 0
    rows = [e.text for e in load_sst2_sample("train", 240)]
    monkeypatch.setattr(pretrain_module, "sst2_sentences", lambda *a: (rows[:200], rows[200:]))
    monkeypatch.setattr(figures_cmd, "_draw", draw)
    monkeypatch.setattr(demo_cmd, "tour", tour)


def run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, err.getvalue().strip()


@contextlib.contextmanager
def read_only_folder(tmp: Path):
    """An empty folder nothing can be created in, inside a parent nothing can be created in:
    for root (whom permissions do not stop) a tmpfs remounted read-only, else mode 0o500."""
    parent, target = tmp / "ro", tmp / "ro" / "out"
    parent.mkdir()
    if os.geteuid() != 0:
        target.mkdir()
        for p in (target, parent):
            p.chmod(0o500)
        try:
            yield target
        finally:
            for p in (parent, target):
                p.chmod(0o700)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(parent)], capture_output=True).returncode:
        pytest.skip("running as root without a tmpfs mount: no read-only folder to try")
    try:
        target.mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(parent)], check=True, capture_output=True)
        yield target
    finally:
        subprocess.run(["umount", str(parent)], capture_output=True)


def setup(state: str, name: str, world: dict, tmp: Path, stack) -> tuple[dict, Path]:
    """(the world the writer reads, its target) for one cell of the table."""
    out = tmp / "out"
    if state == "empty":
        out.mkdir()
    elif state == "checkpoint":
        shutil.copytree(world["ck"], out)
    elif state == "model":
        shutil.copytree(world["bert"], out)
    elif state == "file":
        out.write_text("someone's notes\n")
    elif state == "read-only":
        out = stack.enter_context(read_only_folder(tmp))
    elif state == "input":
        key = WRITERS[name][1]
        if key == "lessons":  # the course the command copies, where it ships
            return world, LESSONS
        if key == "sample":  # the text pretrain trains on, where it ships
            return world, SAMPLE_DIR
        out = shutil.copytree(world[key], tmp / "in")
        world = {**world, key: out}
    return world, out


WORDS = {"checkpoint": "already holds", "model": "already holds a model", "input": "which this command reads",
         "file": "is a file", "read-only": "cannot be written"}


@pytest.mark.parametrize("state", list(WORDS))
@pytest.mark.parametrize("name", list(WRITERS))
def test_a_writer_refuses_a_target_before_any_work(name, state, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import minigpt_ptv2.models as models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the output folder was checked")
    monkeypatch.setattr(models, "load_pretrained", no_model)
    with contextlib.ExitStack() as stack:
        w, out = setup(state, name, world, tmp_path, stack)
        watched = [tmp_path, out] if out in (LESSONS, SAMPLE_DIR) else [tmp_path]
        before = [snapshot(p) for p in watched]
        code, message = run(WRITERS[name][0](w, out))
        assert code == 2 and message.startswith("error: ") and len(message.splitlines()) == 1, (code, message)
        words = "holds files that are not a minigpt_ptv2 checkpoint" if state == "model" and name in IN_PLACE \
            else WORDS[state]
        assert str(out) in message and words in message, message
        assert [snapshot(p) for p in watched] == before, f"{name} changed files while refusing"
        assert not list(tmp_path.glob(".*.new-*")), "a half-built folder was left behind"


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_writer_fills_an_empty_folder(name, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w, out = setup("empty", name, world, tmp_path, None)
    code, message = run(WRITERS[name][0](w, out))
    assert code == 0, message
    assert WRITERS[name][2] <= set(os.listdir(out)), sorted(os.listdir(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no sibling left


@pytest.mark.parametrize("state", ["checkpoint", "model"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_overwrite_replaces_the_old_content_whole(name, state, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w, out = setup(state, name, world, tmp_path, None)
    if name not in IN_PLACE:
        (out / "notes.txt").write_text("of the old content: must not survive")
    old = snapshot(out)
    code, message = run([*WRITERS[name][0](w, out), "--overwrite"])
    if name in IN_PLACE and state == "model":  # a run never deletes what is not its own
        assert code == 2 and "not a minigpt_ptv2 checkpoint" in message and snapshot(out) == old, message
        return
    assert code == 0, message
    names = set(os.listdir(out))
    assert WRITERS[name][2] <= names and "notes.txt" not in names, sorted(names)
    if name in IN_PLACE:  # the old checkpoint replaced by the new run's (which records its id)
        assert names == WRITERS[name][2] and "run" in json.loads((out / "checkpoint.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no sibling left


@pytest.mark.parametrize("name", [n for n in WRITERS if n not in ("lessons", "pretrain")])
def test_a_folder_the_writer_reads_is_refused_even_with_overwrite(name, world, tmp_path):
    w, out = setup("input", name, world, tmp_path, None)
    before = snapshot(tmp_path)
    code, message = run([*WRITERS[name][0](w, out), "--overwrite"])
    assert code == 2 and "which this command reads" in message and "with or without --overwrite" in message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["figures", "demo", "lessons", "pretrain"])
def test_the_default_folder_and_its_rule_are_in_the_help(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in text and "refused" in text and {"figures": "(the default figures too)",
                                                           "demo": "(the default runs/demo too)",
                                                           "lessons": "(the default minigpt_ptv2_lessons too)",
                                                           "pretrain": "(the default runs/decoder too)"}[
        command] in text


# --- what "replaced whole" means (outdir.py) ---------------------------------------------------------

def old_content(out: Path) -> dict:
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("old a")
    (out / "sub" / "b.txt").write_text("old b")
    return snapshot(out)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_the_target_holds_the_old_content_until_the_new_is_swapped_in(exchange, tmp_path, monkeypatch):
    if not exchange:  # systems without an atomic exchange: the old folder is set aside first
        monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    old = old_content(out)
    with outdir.writing(out, "--out", overwrite=True) as stage:
        (stage / "new.txt").write_text("new")
        assert snapshot(out) == old and stage.parent == tmp_path  # built beside it, the old untouched
    assert set(snapshot(out)) == {"new.txt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_write_that_fails_leaves_the_old_content_and_no_stage(tmp_path):
    out = tmp_path / "out"
    old = old_content(out)
    with pytest.raises(RuntimeError, match="half-way"):
        with outdir.writing(out, "--out", overwrite=True) as stage:
            (stage / "half.txt").write_text("half")
            raise RuntimeError("half-way")
    assert snapshot(out) == old and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C too
        with outdir.writing(tmp_path / "new", "--out"):
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # not even an empty "new"


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_swap_killed_half_way_is_put_back_and_a_dead_stage_removed(tmp_path):
    """Killed between the two renames of the fallback swap, the old content is whole beside the
    missing target; the next write to it puts it back first (and then refuses: it holds files).
    A stage left by a process killed mid-write is removed."""
    pid = dead_pid()
    aside = tmp_path / f".out.old-{pid}-0123abcd"
    old = old_content(aside)
    (tmp_path / f".out.new-{pid}-0badc0de").mkdir()
    with pytest.raises(outdir.OutputError, match="already holds 2 entries"):
        with outdir.writing(tmp_path / "out", "--out"):
            pass
    assert snapshot(tmp_path / "out") == old and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refused_places(tmp_path, monkeypatch):
    """Symlinks and '..' are resolved before comparing; the working directory and a mount point
    cannot be swapped; a broken symbolic link is named."""
    model, work = tmp_path / "in" / "model", tmp_path / "a" / "work"
    model.mkdir(parents=True)
    work.mkdir(parents=True)
    (tmp_path / "link").symlink_to(model)
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    monkeypatch.chdir(work)
    reads = {"--model-dir": str(model)}
    for out, says in [(tmp_path / "link", "is --model-dir"), (f"{model}/../model", "is --model-dir"),
                      (model / "sub", "lies inside --model-dir"), (".", "is the working directory"),
                      ("..", "contains the working directory"), (tmp_path / "broken", "is a symbolic link to"),
                      ("/", "contains --model-dir"), ("/proc", "is a mount point")]:
        with pytest.raises(outdir.OutputError, match=re.escape(f"--out {out} {says}")):
            outdir.check(out, "--out", reads, overwrite=True)


HOLDER = """
import fcntl, json, os, sys
fd = os.open(os.path.join(sys.argv[1], "checkpoint.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)  # what training/lock.py takes, without importing torch
os.write(fd, json.dumps({"pid": os.getpid(), "host": "here", "command": "train sst2 prefix",
                         "started": "now"}).encode())
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_folder_a_run_is_writing_is_not_swapped_away(world, tmp_path):
    out = shutil.copytree(world["ck"], tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        before = snapshot(tmp_path)
        code, message = run(["export-hf", world["full"], out, "--model-dir", world["bert"], "--overwrite"])
        assert code == 2 and f"OUT {out} is being written by another run (pid {proc.pid}" in message, message
        assert snapshot(tmp_path) == before
    finally:
        proc.kill()
        proc.wait()


# --- train: an old run kept until the new run's first checkpoint; a resume remembers its folders ------

def interrupt(monkeypatch, when: str):
    """Ctrl-C during the next run: "epoch" before its first checkpoint, "state" between its first
    checkpoint and its first resume state, "after 1" once its first epoch is saved."""
    from minigpt_ptv2.training import keeper as keeper_mod
    from minigpt_ptv2.training import state as run_state
    real_on_epoch, real_save = keeper_mod.Keeper.on_epoch, run_state.save

    def on_epoch(self, record, snapshot):
        if when == "epoch":
            raise KeyboardInterrupt
        return real_on_epoch(self, record, snapshot)

    def save(run_dir, meta, tensors):
        if when == "state":
            raise KeyboardInterrupt
        real_save(run_dir, meta, tensors)
        if when == "after 1":
            raise KeyboardInterrupt
    monkeypatch.setattr(keeper_mod.Keeper, "on_epoch", on_epoch)
    monkeypatch.setattr(run_state, "save", save)


def train(world, out, *extra):
    return run(["train", "sst2", "prefix", *TRAIN, "--epochs", "2", "--max-train", "4", "--max-dev", "2",
                "--model-dir", world["bert"], "--data-dir", world["data"], "--out", out, *extra])


@pytest.fixture
def interrupted_run(world, tmp_path, monkeypatch):
    """tmp/old: a run stopped after its first epoch: its checkpoint and its resume state."""
    with monkeypatch.context() as m:
        interrupt(m, "after 1")
        code, message = train(world, tmp_path / "old")
    assert code == 130 and "`train --resume" in message and "continues after epoch 1" in message, message
    return tmp_path / "old"


def test_overwrite_leaves_the_old_run_whole_until_the_new_run_saves(world, interrupted_run, monkeypatch):
    out, old = interrupted_run, snapshot(interrupted_run)
    with monkeypatch.context() as m:  # stopped before its first checkpoint: the old run is untouched
        interrupt(m, "epoch")
        code, message = train(world, out, "--overwrite")
    assert code == 130 and snapshot(out) == old, message
    assert f"{out} holds what it held before, and `train --resume {out}` continues the earlier run" in message
    with monkeypatch.context() as m:  # stopped between its first checkpoint and its first resume state
        interrupt(m, "state")
        code, message = train(world, out, "--overwrite")
    assert code == 130 and snapshot(out)["checkpoint.json"] != old["checkpoint.json"], message
    assert snapshot(out)["resume/state.json"] == old["resume/state.json"]  # the old run's: never resumed
    code, message = train(world, out, "--resume", out)
    assert code == 2 and "its resume state belongs to an earlier run" in message, message
    code, message = train(world, out)
    assert code == 2 and "already holds a checkpoint" in message and "--resume" not in message, message
    code, message = train(world, out, "--overwrite")  # a new run to its end: only its own pair is left
    assert code == 0, message
    assert sorted(os.listdir(out)) == ["checkpoint.json", "checkpoint.safetensors"]


def test_resume_reads_the_folders_the_run_was_started_with(world, interrupted_run, tmp_path, monkeypatch):
    """Started with --model-dir and --data-dir, resumed with neither: before, the default folders
    were read and the run was refused as "started on other data; drop the option"."""
    monkeypatch.chdir(tmp_path)
    code, message = run(["train", "--resume", interrupted_run, "--no-progress"])
    assert code == 0, message
    assert sorted(os.listdir(interrupted_run)) == ["checkpoint.json", "checkpoint.safetensors"]


def test_resume_names_a_folder_that_is_gone_or_other_data(world, interrupted_run, tmp_path):
    other = tiny_world.sst2(tmp_path / "other")
    (other / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "something else\t1\n" * 8)
    before = snapshot(interrupted_run)
    code, message = run(["train", "--resume", interrupted_run, "--no-progress", "--data-dir", other])
    assert code == 2 and f"the run in {interrupted_run} was started on training data with fingerprint" in message
    assert f"{other.resolve()} now gives" in message and "drop the option" not in message, message
    state = interrupted_run / "resume" / "state.json"
    meta = json.loads(state.read_text())
    meta["extra"]["args"]["data_dir"] = str(tmp_path / "moved")
    state.write_text(json.dumps(meta))
    code, message = run(["train", "--resume", interrupted_run, "--no-progress"])
    assert code == 2 and f"--data-dir: the run in {interrupted_run} was started with --data-dir {tmp_path / 'moved'}" \
        in message and "which is gone" in message, message
    after = snapshot(interrupted_run)
    assert all(after[k] == v for k, v in before.items() if k != "resume/state.json")  # only the edit


# --- the machine's faults, for real -----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only): a write past it fails with ENOSPC, as on a full disk."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                           capture_output=True).returncode:
        pytest.skip("no tmpfs to fill (needs root); tests/bad_inputs/test_outputs.py simulates a full disk")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_full_disk_leaves_the_old_content_and_says_so(world, small_disk):
    out = small_disk / "out"
    old = old_content(out)
    code, message = run(["export-hf", world["full"], out, "--model-dir", world["bert"], "--overwrite"])
    assert code == 1 and len(message.splitlines()) == 1, message
    assert message.startswith(f"error: OUT {out}: no space left on the device") and "holds what it held before" \
        in message, message
    assert snapshot(out) == old and sorted(p.name for p in small_disk.iterdir()) == ["out"]


def test_a_full_disk_during_training_keeps_the_last_checkpoint(world, small_disk, tmp_path):
    """train writes in place: the epoch's save fails whole, the checkpoint before it stays."""
    out = small_disk / "run"
    shutil.copytree(world["ck"], out)
    free = os.statvfs(small_disk)
    page = free.f_frsize
    (small_disk / "filler").write_bytes(b"\0" * ((free.f_bavail - 1) * page))  # one page left: the lock file's
    old = snapshot(out)
    code, message = train(world, out, "--overwrite")
    assert code == 1 and len(message.splitlines()) == 1 and "no space left on the device" in message, message
    assert snapshot(out) == old, "the checkpoint there before was touched"
    assert "--resume" not in message  # the first epoch's save failed: nothing of this run to continue


def test_a_file_size_limit_leaves_the_old_content_and_says_so(world, tmp_path):
    """`ulimit -f` for this process (Python ignores SIGXFSZ, so the write raises EFBIG); export-hf
    writes a model.safetensors of 80 KB past a 32 KiB limit (safetensors says "File too large
    (os error 27)", in a message of its own)."""
    out = tmp_path / "out"
    old = old_content(out)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
    try:
        code, message = run(["export-hf", world["full"], out, "--model-dir", world["bert"], "--overwrite"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 1 and message.startswith(f"error: OUT {out}: a file grew past the file-size limit"), message
    assert snapshot(out) == old and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_closed_pipe_is_one_line_not_a_traceback(tmp_path):
    """`minigpt_ptv2 lessons | head -0`: the reader gone before anything is printed (lessons
    imports no torch: a quick command that prints)."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "minigpt_ptv2", "lessons", "--out", str(tmp_path / "course")],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: standard output was closed") and len(done.stderr.splitlines()) == 1
    assert (tmp_path / "course" / "README.md").is_file()  # the work itself was done


def test_environment_errors_are_told_apart_from_bugs():
    from minigpt_ptv2.cli import exit_code, message
    full = OSError(errno.ENOSPC, "No space left on device")
    assert exit_code(full) == 1 and message(full).startswith("no space left on the device")
    assert exit_code(FileNotFoundError(2, "No such file", "x")) == 2
    assert exit_code(ValueError("a bug")) is None and exit_code(OSError(errno.EINVAL, "bad")) is None
