"""No command deletes or overwrites what it did not create; resume paths keep working.

Each data-loss case found by a hostile review is replayed through the command line: the command
must fail with a one-line error (exit 2), and the input and every foreign file must be intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_reference import reference_clip
from ufinebench.cli import main
from ufinebench.errors import UFineBenchError
from ufinebench.outputs import MARKER, OutputError, check_outputs, claim_dir, output_lock, publish_dir, read_marker

SYNTH = ["--identities", "6", "--images-per-id", "2:2", "--size", "64x32", "--workers", "1"]


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fails_in_one_line(argv: list[str], capsys, match: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    return err


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> Path:
    """A tiny OpenAI-layout CLIP state dict saved as W/ViT-B-16.pt, beside a file of the user's."""
    ref = reference_clip()
    folder = tmp_path_factory.mktemp("weights") / "W"
    folder.mkdir()
    torch.save(ref.state_dict(), folder / "ViT-B-16.pt")
    (folder / "notes.txt").write_text("my notes")
    return folder / "ViT-B-16.pt"


def test_import_clip_into_the_folder_of_its_weights_is_refused(clip_weights, capsys, tmp_path):
    w = clip_weights.parent
    before = _tree(w)
    args = ["import-clip", str(clip_weights), "--image-size", "32x32", "--text-length", "16", "--activation", "quick_gelu"]
    _fails_in_one_line([*args, "-o", str(w)], capsys, "holds the input")
    _fails_in_one_line([*args, "-o", str(clip_weights)], capsys, "is also an input")
    _fails_in_one_line([*args, "-o", str(w), "--force"], capsys, "holds the input")  # --force never makes an input an output
    assert _tree(w) == before
    # a folder of the user's (no input in it) needs --force, and then keeps its files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")
    _fails_in_one_line([*args, "-o", str(mine)], capsys, "--force")
    assert main([*args, "-o", str(mine), "--force"]) == 0
    assert (mine / "keep.txt").read_text() == "keep" and (mine / "model.safetensors").is_file()
    assert main([*args, "-o", str(mine), "--force"]) == 0  # importing again replaces only the checkpoint
    assert (mine / "keep.txt").read_text() == "keep"
    # its own output is replaced without --force, in one rename
    ck = tmp_path / "ck"
    assert main([*args, "-o", str(ck)]) == 0
    assert main([*args, "-o", str(ck)]) == 0
    assert sorted(os.listdir(ck)) == sorted([MARKER, "meta.json", "model.safetensors"])
    assert read_marker(ck)["written_by"] == "import-clip"
    capsys.readouterr()


def test_build_3c_stats_metrics_never_write_onto_their_input(tmp_path, capsys):
    ds = tmp_path / "ds"
    assert main(["synth", str(ds), *SYNTH]) == 0
    capsys.readouterr()
    before = _tree(ds)
    fine = ds / "ufine_synth.json"
    _fails_in_one_line(["build-3c", "--from", str(fine), "--out", str(fine)], capsys, "is also an input")
    shutil.copytree(Path(__file__).parent / "fixtures" / "formats" / "UFine6926", tmp_path / "u")
    u_file = tmp_path / "u" / "UFine6926_Annotations_1024.json"
    u_raw = u_file.read_bytes()
    _fails_in_one_line(["build-3c", "--from", str(tmp_path / "u"), "--out", str(u_file)], capsys, "is also an input")  # folder -> its file
    _fails_in_one_line(["stats", str(tmp_path / "u"), "--json", str(u_file)], capsys, "is also an input")
    assert u_file.read_bytes() == u_raw
    _fails_in_one_line(["build-3c", "--from", str(fine), "--out", str(tmp_path / "x.json"), "--cache", str(ds)], capsys,
                       "is also an input")  # the dataset's folder (its images) is an input too
    _fails_in_one_line(["stats", str(fine), "--json", str(fine)], capsys, "is also an input")
    _fails_in_one_line(["stats", str(fine), "--plot", str(fine)], capsys, "is also an input")
    assert _tree(ds) == before
    npz = tmp_path / "m.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, similarity=rng.random((4, 3)), query_ids=np.array([1, 2, 3, 1]), gallery_ids=np.array([1, 2, 3]))
    raw = npz.read_bytes()
    _fails_in_one_line(["metrics", str(npz), "--json", str(npz)], capsys, "is also an input")
    assert npz.read_bytes() == raw
    # the normal paths still work
    assert main(["stats", str(fine), "--json", str(tmp_path / "s.json")]) == 0
    assert main(["metrics", str(npz), "--json", str(tmp_path / "m.json")]) == 0
    assert main(["build-3c", "--from", str(fine), "--out", str(tmp_path / "3c.json")]) == 0
    assert json.loads((tmp_path / "3c.json").read_text())


def test_synth_overwrite_removes_only_its_own_dataset(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    _fails_in_one_line(["synth", str(out), *SYNTH, "--overwrite"], capsys, "--force")
    assert sorted(os.listdir(out)) == ["thesis.tex"]
    assert main(["synth", str(out), *SYNTH, "--force"]) == 0  # writes beside the user's file
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "ufine_synth.json").is_file()
    _fails_in_one_line(["synth", str(out), *SYNTH, "--force"], capsys, "--overwrite")  # a dataset is there: say so
    assert main(["synth", str(out), *SYNTH, "--seed", "5", "--overwrite"]) == 0
    assert (out / "thesis.tex").read_text() == "years of work"
    assert set(read_marker(out)["entries"]) >= {"images", "ufine_synth.json"}
    # a clean synth folder is replaced whole; a file the user later drops in survives --overwrite
    own = tmp_path / "own"
    assert main(["synth", str(own), *SYNTH]) == 0
    (own / "images" / "mine.jpg").write_bytes(b"x")  # inside an entry the toolkit wrote: replaced with it
    (own / "extra.txt").write_text("mine")
    assert main(["synth", str(own), *SYNTH, "--overwrite"]) == 0
    assert (own / "extra.txt").read_text() == "mine" and not (own / "images" / "mine.jpg").exists()
    # a foreign file with the name of an output is never replaced, even with --force
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "CARD.md").write_text("my card")
    _fails_in_one_line(["synth", str(clash), *SYNTH, "--force"], capsys, "move it away")
    assert sorted(os.listdir(clash)) == ["CARD.md"] and (clash / "CARD.md").read_text() == "my card"
    assert not list(tmp_path.glob(".clash.*"))  # no temporary tree or lock left behind


def test_demo_fresh_deletes_only_what_the_demo_wrote(tmp_path, capsys, monkeypatch):
    import ufinebench.demo as D

    out = tmp_path / "d"
    out.mkdir()
    (out / "paper.pdf").write_bytes(b"%PDF")
    _fails_in_one_line(["demo", "--quick", "--fresh", "--out", str(out)], capsys, "--force")
    assert sorted(os.listdir(out)) == ["paper.pdf"]
    calls = []

    def fake_run(out_dir, *, quick, fresh, force):  # the demo's own steps are tested in test_benchmarks
        from ufinebench.outputs import add_entries, claim_dir, remove_owned

        claim_dir(out_dir, "demo", force=force)
        if fresh:
            calls.append(remove_owned(out_dir, "demo"))
        add_entries(out_dir, "demo", D.DEMO_ENTRIES)
        (out_dir / "results.json").write_text("{}")
        (out_dir / "data").mkdir(exist_ok=True)
        return 0

    monkeypatch.setattr(D, "_run_demo", fake_run)
    assert main(["demo", "--quick", "--out", str(out), "--force"]) == 0
    assert main(["demo", "--quick", "--fresh", "--out", str(out)]) == 0  # its own folder now: no --force needed
    assert sorted(calls[0]) == ["data", "results.json"]
    assert (out / "paper.pdf").read_bytes() == b"%PDF"


def test_demo_fresh_really_deletes_only_owned_entries(tmp_path):
    from ufinebench.outputs import add_entries, remove_owned

    out = tmp_path / "d"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    claim_dir(out, "demo", force=True)
    add_entries(out, "demo", ["run", "results.json"])
    (out / "run").mkdir()
    (out / "run" / "x").write_text("1")
    (out / "results.json").write_text("{}")
    assert sorted(remove_owned(out, "demo")) == ["results.json", "run"]
    assert sorted(os.listdir(out)) == [MARKER, "mine.txt"]
    # an unmarked folder is never touched by remove_owned
    other = tmp_path / "other"
    other.mkdir()
    (other / "run").mkdir()
    assert remove_owned(other, "demo") == [] and (other / "run").is_dir() and not (other / MARKER).exists()


def test_a_second_writer_is_refused(tmp_path, capsys):
    out = tmp_path / "ds"
    with output_lock(out):
        _fails_in_one_line(["synth", str(out), *SYNTH], capsys, "another ufinebench process")
        with pytest.raises(OutputError, match="another ufinebench process"):
            with output_lock(out):
                pass
    assert not out.exists()
    with output_lock(out):  # released: free again, and no lock file remains afterwards
        pass
    assert not list(tmp_path.iterdir())


def test_lock_is_refused_across_processes(tmp_path):
    import subprocess
    import sys
    import time

    target = tmp_path / "t"
    code = ("import sys, time; from ufinebench.outputs import output_lock\n"
            f"with output_lock({str(target)!r}):\n    print('held', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputError):
            with output_lock(target):
                pass
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.1)
    with output_lock(target):  # a killed holder frees the lock
        pass


def test_train_and_index_and_report_guard_their_folders(tiny_synth, tmp_path, capsys):
    from ufinebench.config import load_config
    from ufinebench.training import train

    common = ["data.workers=0", "data.bpe_vocab_size=300", "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=2",
              "train.eval_every=0", "train.tensorboard=false", "model.embed_dim=32", "model.vision_width=32", "model.text_width=32",
              "model.vision_layers=1", "model.text_layers=1", "model.image_size=64x32", "model.patch_size=16"]
    data = tiny_synth / "ufine_synth.json"
    before = _tree(tiny_synth)
    with pytest.raises(UFineBenchError, match="holds the input"):  # a run folder that holds the dataset
        train(load_config("synth-cpu-small", [*common, f"data.dataset={data}", f"train.out_dir={tiny_synth.parent}"]), progress=False)
    with pytest.raises(UFineBenchError, match="is also an input"):  # the dataset's own folder (its images)
        train(load_config("synth-cpu-small", [*common, f"data.dataset={data}", f"train.out_dir={tiny_synth}"]), progress=False)
    with pytest.raises(UFineBenchError, match="lies inside the input folder"):  # among the dataset's images
        train(load_config("synth-cpu-small", [*common, f"data.dataset={data}", f"train.out_dir={tiny_synth / 'images' / 'run'}"]),
              progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("k")
    with pytest.raises(UFineBenchError, match="not written by ufinebench"):
        train(load_config("synth-cpu-small", [*common, f"data.dataset={data}", f"train.out_dir={foreign}"]), progress=False)
    assert _tree(tiny_synth) == before and sorted(os.listdir(foreign)) == ["keep.txt"]
    run = train(load_config("synth-cpu-small", [*common, f"data.dataset={data}", f"train.out_dir={tmp_path / 'run'}"]), progress=False)
    assert read_marker(run)["written_by"] == "train"

    # index: not into the dataset or the checkpoint; resume and --add still work in its own folder
    _fails_in_one_line(["index", "--checkpoint", str(run), "--images", str(data), "--out", str(tiny_synth)], capsys, "is also an input")
    _fails_in_one_line(["index", "--checkpoint", str(run), "--images", str(data), "--out", str(run)], capsys, "is also an input")
    _fails_in_one_line(["index", "--checkpoint", str(run), "--images", str(data), "--out", str(foreign)], capsys, "--force")
    idx = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(run), "--images", str(data), "--out", str(idx)]) == 0
    assert main(["index", "--checkpoint", str(run), "--images", str(data), "--out", str(idx), "--add"]) == 0
    assert "(0 encoded now)" in capsys.readouterr().out
    _fails_in_one_line(["index", "--checkpoint", str(run), "--images", str(tiny_synth / "ufine_synth_3c.json"), "--out", str(idx), "--add"],
                       capsys, "one source")

    # eval: outputs never onto the data or the checkpoint; the report folder is its own
    ev = ["eval", "--checkpoint", str(run), "--data", str(data)]
    _fails_in_one_line([*ev, "--json", str(data)], capsys, "is also an input")
    _fails_in_one_line([*ev, "--report", str(tiny_synth)], capsys, "is also an input")
    _fails_in_one_line([*ev, "--json", str(tmp_path / "a.json"), "--save-features", str(tmp_path / "a.json")], capsys, "same path")
    (foreign / "index.html").write_text("my page")
    _fails_in_one_line([*ev, "--report", str(foreign)], capsys, "--force")
    assert (foreign / "index.html").read_text() == "my page" and _tree(tiny_synth) == before
    assert main([*ev, "--report", str(tmp_path / "rep")]) == 0
    assert main([*ev, "--report", str(tmp_path / "rep")]) == 0  # its own report is rewritten
    capsys.readouterr()


def test_check_outputs_and_publish_rules(tmp_path):
    a = tmp_path / "a.json"
    a.write_text("1")
    check_outputs({"--json": tmp_path / "b.json"}, [a])
    with pytest.raises(OutputError, match="lies inside the input folder"):  # a checkpoint's files, a dataset's images
        check_outputs({"--json": tmp_path / "sub" / "b.json"}, [tmp_path])
    with pytest.raises(OutputError, match="is also an input"):
        check_outputs({"--json": tmp_path / "." / "a.json"}, [a])  # the same file by another spelling
    with pytest.raises(OutputError, match="holds the input"):
        check_outputs({"--out": tmp_path}, [a], folders=["--out"])
    # publish into a folder holding only this command's entries: one rename, marker rewritten
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    (tmp / "x").write_text("1")
    publish_dir(tmp, out, "synth")
    assert read_marker(out)["entries"] == ["x"] and not tmp.exists()
    tmp.mkdir()
    (tmp / "y").write_text("2")
    publish_dir(tmp, out, "synth")
    assert sorted(os.listdir(out)) == [MARKER, "y"]  # the old entry "x" was the command's own


@pytest.fixture(scope="module")
def small_run(tiny_synth, tmp_path_factory) -> Path:
    """A one-epoch run of the preset on the tiny dataset (checkpoint files to protect)."""
    from test_train import _cfg
    from ufinebench.training import train

    return train(_cfg(tiny_synth, tmp_path_factory.mktemp("protect") / "run", "train.epochs=1", "train.eval_every=0"), progress=False)


def test_no_output_lands_inside_an_input_folder_or_on_a_derived_name(tiny_synth, small_run, tmp_path, capsys):
    """eval's --json / --save-features into a checkpoint's own files or onto a dataset image, and the
    names derived for several models (f_1.npz, f_2.npz) meeting an input or another output: refused,
    and every file of the dataset and the run unchanged."""
    data = tiny_synth / "ufine_synth.json"
    best = small_run / "checkpoints" / "best"
    image = sorted((tiny_synth / "images").glob("*.jpg"))[0]
    before = {**_tree(tiny_synth), **{f"run/{k}": v for k, v in _tree(small_run).items()}}
    ev = ["eval", "--checkpoint", str(small_run), "--data", str(data)]
    _fails_in_one_line([*ev, "--json", str(best / "meta.json")], capsys, "lies inside the input folder")
    _fails_in_one_line([*ev, "--save-features", str(best / "model.safetensors"), "--force"], capsys, "lies inside the input folder")
    _fails_in_one_line([*ev, "--save-features", str(image), "--force"], capsys, "lies inside the input folder")  # --force changes nothing
    two = [*ev, "--checkpoint", str(best)]
    scores = tmp_path / "f_1.npz"
    np.savez(scores, similarity=np.zeros((2, 2)))
    _fails_in_one_line([*two, "--scores", str(scores), "--save-features", str(tmp_path / "f.npz")], capsys, "is also an input")
    _fails_in_one_line([*two, "--save-features", str(tmp_path / "g.npz"), "--json", str(tmp_path / "g_2.npz")], capsys, "same path")
    assert {**_tree(tiny_synth), **{f"run/{k}": v for k, v in _tree(small_run).items()}} == before


def test_special_files_and_existing_files_are_not_replaced(tmp_path, capsys):
    """A FIFO or a device given as an output is refused (never replaced by a regular file, even with
    --force); an existing file is replaced only with --force."""
    npz = tmp_path / "m.npz"
    np.savez(npz, similarity=np.eye(3), query_ids=np.arange(3), gallery_ids=np.arange(3))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _fails_in_one_line(["metrics", str(npz), "--json", str(fifo), "--force"], capsys, "special file")
    assert fifo.is_fifo()
    _fails_in_one_line(["metrics", str(npz), "--json", "/dev/null", "--force"], capsys, "special file")
    assert Path("/dev/null").is_char_device()
    mine = tmp_path / "mine.json"
    mine.write_text("my results")
    _fails_in_one_line(["metrics", str(npz), "--json", str(mine)], capsys, "pass --force")
    assert mine.read_text() == "my results"
    _fails_in_one_line(["stats", str(Path(__file__).parent / "fixtures" / "formats" / "UFine6926"), "--json", str(mine)], capsys, "--force")
    assert main(["metrics", str(npz), "--json", str(mine), "--force"]) == 0
    assert json.loads(mine.read_text())["R1"] == 100.0
    _fails_in_one_line(["metrics", str(npz), "--json", str(tmp_path)], capsys, "is a folder")
    capsys.readouterr()


def test_a_folder_is_adopted_only_by_its_marker(small_run, clip_weights, tmp_path, capsys, monkeypatch):
    """Files named like a command's outputs do not make a folder its own: import-clip into a trained
    checkpoint folder is refused, with --force too (its files have the checkpoint's names), and the
    demo never deletes a user's data/ and report/ beside a data.options.json; a failed import claims nothing."""
    ck = small_run / "checkpoints" / "best"
    before = _tree(ck)
    args = ["import-clip", str(clip_weights), "--image-size", "32x32", "--text-length", "16", "--activation", "quick_gelu"]
    _fails_in_one_line([*args, "-o", str(ck)], capsys, "not written by ufinebench")
    _fails_in_one_line([*args, "-o", str(ck), "--force"], capsys, "move it away")
    assert _tree(ck) == before and not (ck / MARKER).exists()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    out = tmp_path / "new"
    assert main([*args[:1], str(broken), *args[2:], "-o", str(out)]) == 2
    assert "cannot read CLIP weights" in capsys.readouterr().err
    assert not (out / MARKER).exists() and not (out / "model.safetensors").exists()
    import ufinebench.model.pretrained as P

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(P, "save_checkpoint", disk_full)  # the conversion succeeds, writing fails
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("n")
    assert main([*args, "-o", str(mine), "--force"]) == 1
    assert "No space left" in capsys.readouterr().err and sorted(os.listdir(mine)) == ["notes.txt"]  # no marker claims it
    monkeypatch.undo()
    d = tmp_path / "d"
    for name in ("data", "report"):
        (d / name).mkdir(parents=True)
        (d / name / "mine.txt").write_text(name)
    (d / "data.options.json").write_text("{}")
    _fails_in_one_line(["demo", "--quick", "--fresh", "--out", str(d)], capsys, "not written by ufinebench")
    assert (d / "data" / "mine.txt").read_text() == "data" and (d / "report" / "mine.txt").read_text() == "report"
    capsys.readouterr()


def test_marker_entries_are_plain_names_inside_their_folder(tmp_path):
    """A hand-edited marker naming "../victim", ".." or "a/b" deletes nothing outside its folder."""
    from ufinebench.outputs import remove_owned

    out, victim = tmp_path / "out", tmp_path / "victim"
    (out / "run").mkdir(parents=True)
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (out / MARKER).write_text(json.dumps({"written_by": "demo", "entries": ["../victim", "..", ".", "run/x", "/etc", "run"]}))
    assert read_marker(out)["entries"] == ["run"]
    assert remove_owned(out, "demo") == ["run"]
    assert (victim / "keep.txt").read_text() == "keep" and out.is_dir() and not (out / "run").exists()


def test_a_killed_runs_partial_folder_is_removed_by_the_next_run(tmp_path, capsys):
    """synth builds under .OUT.partial-PID; one left by a killed process is removed when synth runs
    again on OUT (never one of a live process)."""
    stale = tmp_path / ".ds.partial-999999999"  # no such process
    (stale / "images").mkdir(parents=True)
    live = tmp_path / f".ds.partial-{os.getppid()}"  # a live process (our parent)
    live.mkdir()
    assert main(["synth", str(tmp_path / "ds"), *SYNTH]) == 0
    assert not stale.exists() and live.is_dir()
    capsys.readouterr()
