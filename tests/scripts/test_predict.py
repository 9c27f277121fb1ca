"""predict.py: every input kind, output names and sizes, label values, TTA/sliding equivalences, errors."""
import multiprocessing
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import network
import predict
from tests.conftest import ROOT
from tests.helpers import signal_group_when
from utils.inference import outputs
from utils.io.checkpoint import CheckpointError
from utils.inference.predictor import normalize, sliding_window_labels

MODEL = "deeplabv3plus_mobilenet"
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = network.build_model(MODEL, NUM_CLASSES, 16, pretrained_backbone=False).eval()
    folder = tmp_path_factory.mktemp("ckpt")
    path = folder / "best.pth"
    torch.save({"model_state": model.state_dict(), "cur_itrs": 1}, path)
    raw = folder / "raw.pth"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, raw)
    return str(path), str(raw), model


def _rgb(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def inputs(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "other").mkdir()
    _rgb(40, 30).save(root / "sub" / "a.png")
    _rgb(40, 30, 1).save(root / "other" / "a.png")
    _rgb(41, 33, 2).save(root / "b.JPG")
    _rgb(40, 30, 3).convert("L").save(root / "gray.png")
    _rgb(40, 30, 4).convert("RGBA").save(root / "alpha.png")
    _rgb(40, 30, 5).convert("P").save(root / "palette.bmp")
    _rgb(40, 30, 6).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)).save(root / "deep.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    _rgb(40, 30, 7).save(root / "rotated.jpg", exif=exif)
    (root / "notes.txt").write_text("not an image")
    return root


def _run(tmp_path, ckpt_path, *extra):
    out = tmp_path / "out"
    code = predict.main(["--input", str(tmp_path / "in"), "--ckpt", ckpt_path, "--model", MODEL,
                         "--save_val_results_to", str(out), "--num_workers", "0", *extra])
    return code, out


def test_every_input_kind_gives_outputs_of_the_input_size(tmp_path, inputs, ckpt, capsys):
    code, out = _run(tmp_path, ckpt[0], "--output", "color", "label", "overlay")
    assert code == 0
    assert "9 done, 0 skipped" in capsys.readouterr().out
    expected = {"sub/a": (40, 30), "other/a": (40, 30), "b": (41, 33), "gray": (40, 30), "alpha": (40, 30),
                "palette": (40, 30), "cmyk": (40, 30), "deep": (40, 30), "rotated": (30, 40)}
    for stem, size in expected.items():
        for suffix in (".png", "_label.png", "_overlay.png"):
            with Image.open(out / f"{stem}{suffix}") as img:
                assert img.size == size, (stem, suffix)
    assert Image.open(out / "b_label.png").mode == "P"


def test_label_masks_equal_the_model_argmax(tmp_path, inputs, ckpt):
    code, out = _run(tmp_path, ckpt[1], "--output", "label", "--val_batch_size", "3")
    assert code == 0
    image = torch.from_numpy(np.array(Image.open(inputs / "b.JPG").convert("RGB"))).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = ckpt[2](normalize(image)).argmax(1)[0].numpy()
    assert np.array_equal(np.array(Image.open(out / "b_label.png")), expected)


def _labels(out):
    return {f: np.array(Image.open(os.path.join(d, f))) for d, _, files in os.walk(out) for f in files}


def test_tta_identity_and_small_image_slide_equal_plain_inference(tmp_path, inputs, ckpt):
    _, plain = _run(tmp_path, ckpt[0], "--output", "label")
    plain_labels = _labels(plain)
    os.rename(plain, tmp_path / "plain")
    _, tta = _run(tmp_path, ckpt[0], "--output", "label", "--tta", "--tta_scales", "1.0", "--no-tta_flip")
    tta_labels = _labels(tta)
    os.rename(tta, tmp_path / "tta")
    _, slide = _run(tmp_path, ckpt[0], "--output", "label", "--slide", "--window", "64", "--stride", "32")
    slide_labels = _labels(slide)
    for name, labels in plain_labels.items():
        assert np.array_equal(labels, tta_labels[name]) and np.array_equal(labels, slide_labels[name]), name


def test_full_tta_runs_and_keeps_sizes(tmp_path, inputs, ckpt):
    code, out = _run(tmp_path, ckpt[0], "--output", "label", "--tta", "--amp", "bf16", "--channels_last")
    assert code == 0
    assert Image.open(out / "b_label.png").size == (41, 33)


def test_sliding_window_band_equals_full_accumulation():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    image = torch.randint(0, 255, (3, 70, 53), dtype=torch.uint8)

    def logits(crop):
        with torch.no_grad():
            return conv(crop.float())

    got = sliding_window_labels(logits, image, 4, window=24, stride=16)
    total = torch.zeros(4, 70, 53)
    tops = list(range(0, 70 - 24, 16)) + [70 - 24]
    lefts = list(range(0, 53 - 24, 16)) + [53 - 24]
    for top in tops:
        for left in lefts:
            total[:, top:top + 24, left:left + 24] += logits(image[None, :, top:top + 24, left:left + 24])[0]
    assert torch.equal(got, total.argmax(0))


def test_corrupt_file_is_skipped_with_summary_and_status_1(tmp_path, inputs, ckpt, capsys):
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    code, out = _run(tmp_path, ckpt[0])
    captured = capsys.readouterr()
    assert code == 1
    assert "skipped: cannot decode" in captured.err and "broken.png" in captured.err
    assert "9 done, 1 skipped" in captured.out
    assert (out / "b.png").exists()


def test_missing_checkpoint_and_empty_folder_are_errors(tmp_path, inputs, ckpt, capsys):
    code, _ = _run(tmp_path, str(tmp_path / "missing.pth"))
    assert code == 1 and "missing.pth does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = predict.main(["--input", str(tmp_path / "empty"), "--ckpt", ckpt[0], "--model", MODEL,
                         "--save_val_results_to", str(tmp_path / "out")])
    assert code == 1 and "holds no images" in capsys.readouterr().err


def test_a_run_that_fails_before_writing_leaves_no_output_folder(tmp_path, inputs, ckpt, capsys, monkeypatch):
    """The default predictions/ and the folders on the way to --save_val_results_to, made to check that they can
    be written, go when the run ends without writing there; a folder that was there stays."""
    monkeypatch.chdir(tmp_path)
    args = ["--input", str(tmp_path / "nothing_here"), "--ckpt", ckpt[0], "--model", MODEL]
    for extra in ([], ["--save_val_results_to", "runs/a/out"]):
        assert predict.main(args + extra) == 1
        assert "nothing_here does not exist" in capsys.readouterr().err
        assert os.listdir(tmp_path) == ["in"]
    (tmp_path / "kept").mkdir()
    assert predict.main(args + ["--save_val_results_to", "kept"]) == 1
    assert sorted(os.listdir(tmp_path)) == ["in", "kept"]


def test_incompatible_checkpoint_is_a_clear_error(tmp_path, inputs, ckpt, capsys):
    code, _ = _run(tmp_path, ckpt[0], "--model", "deeplabv3_mobilenet")
    assert code == 1 and "does not fit this model" in capsys.readouterr().err


def test_model_options_come_from_our_checkpoint(tmp_path, inputs, capsys):
    model = network.build_model("deeplabv3_mobilenet", 2, 8, pretrained_backbone=False).eval()
    path = tmp_path / "ours.pth"
    torch.save({"model_state": model.state_dict(), "model_name": "deeplabv3_mobilenet", "output_stride": 8,
                "separable_conv": False}, path)
    out = tmp_path / "o"
    assert predict.main(["--input", str(inputs / "b.JPG"), "--ckpt", str(path), "--output", "label",
                         "--save_val_results_to", str(out), "--num_workers", "0"]) == 0
    image = torch.from_numpy(np.array(Image.open(inputs / "b.JPG").convert("RGB"))).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = model(normalize(image)).argmax(1)[0].numpy()
    assert np.array_equal(np.array(Image.open(out / "b_label.png")), expected)
    assert predict.main(["--input", str(inputs / "b.JPG"), "--ckpt", str(path), "--model", MODEL,  # predict.py
                         "--save_val_results_to", str(out), "--num_workers", "0"]) == 1  # has no --init_from
    assert capsys.readouterr().err.strip() == (f"error: checkpoint {path} holds a deeplabv3_mobilenet but --model "
                                               f"{MODEL} was given; drop --model to use the checkpoint's")


def test_inputs_sharing_a_stem_keep_their_extension():
    files = [("x/v1.2/a.jpg", "v1.2/a.jpg"), ("x/v1.2/a.png", "v1.2/a.png"), ("x/b.png", "b.png")]
    assert outputs.output_names(files) == ["v1.2/a_jpg", "v1.2/a_png", "b"]


def test_num_classes_that_the_checkpoint_does_not_have_is_an_error(tmp_path, inputs, ckpt, capsys):
    code, _ = _run(tmp_path, ckpt[0], "--num_classes", "5")
    assert code == 1
    assert capsys.readouterr().err.strip() == (f"error: checkpoint {ckpt[0]} predicts {NUM_CLASSES} classes, not the 5 "
                                               "of --num_classes; drop --num_classes (the checkpoint's count is used)")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_stops_with_whole_files(tmp_path, ckpt, signum):
    """A scheduler or Ctrl-C signals the decoding workers too; the run ends in one line and leaves no stub."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        _rgb(96, 96, i).save(folder / f"{i:02d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(ROOT, "predict.py"), "--input", str(folder), "--ckpt", ckpt[0],
           "--model", MODEL, "--save_val_results_to", str(out), "--num_workers", "2", "--val_batch_size", "1",
           "--tta", "--output", "color", "label"]
    code, printed = signal_group_when(cmd, lambda _: any(out.glob("*_label.png")), signum, cwd=ROOT)
    assert code == 128 + signum, printed
    assert f"{signum.name} received: stopped after" in printed and "Traceback" not in printed
    written = sorted(os.listdir(out))
    assert 0 < len(written) < 120 and not any(name.startswith(".tmp") for name in written)
    for name in written:
        with Image.open(out / name) as img:
            img.load()  # a truncated PNG raises here


def test_the_image_workers_start_before_the_model_is_loaded_and_end_before_the_videos(tmp_path, inputs, ckpt, capsys,
                                                                                      monkeypatch):
    """Forked after the model, the workers would share this process's memory copy-on-write, and every page it then
    wrote was copied: 30 HRNet-48 predictions took 11.2-12.0 instead of 9.9-10.6 s (AMX Xeon, 2 cores). Done with
    the images, they end: they would hold the memory of the largest image through the videos."""
    others = set(multiprocessing.active_children())  # a process of an earlier test's
    workers = {}

    def counting(name, function):
        def counted(*args, **kwargs):
            workers[name] = len(set(multiprocessing.active_children()) - others)
            return function(*args, **kwargs)
        monkeypatch.setattr(predict, name, counted)

    counting("load_segmenter", predict.load_segmenter)
    counting("predict_videos", predict.predict_videos)
    code, out = _run(tmp_path, ckpt[0], "--num_workers", "2")
    assert code == 0 and "9 done, 0 skipped" in capsys.readouterr().out
    assert workers == {"load_segmenter": 2, "predict_videos": 0}
    assert len(list(out.glob("*.png"))) + len(list(out.glob("*/*.png"))) == 9


# The model loads until a signal has set predict.py's stop flag (its handler; signal.pause() would wait for ever for
# one that came before it), while the DataLoader workers (with --num_workers) are slow to set themselves to ignore
# stop signals: PyTorch's worker has its own SIGTERM handler by then.
SLOW_LOAD = ("import signal, sys, time\nimport predict\nfrom utils.runtime import interrupts\n"
             "load, ignore = predict.load_segmenter, interrupts.ignore_stop_signals\n"
             "def slow(*args, **kwargs):\n"
             "    print('loading', flush=True)\n"
             "    while not signal.getsignal(signal.SIGTERM).signal_name: time.sleep(0.05)\n"
             "    return load(*args, **kwargs)\n"
             "def slow_ignore(worker_id):\n    time.sleep(2); ignore(worker_id)\n"
             "predict.load_segmenter, interrupts.ignore_stop_signals = slow, slow_ignore\n"
             "sys.exit(predict.main(sys.argv[1:]))\n")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_signal_while_the_model_loads_writes_nothing_and_says_so(tmp_path, ckpt, workers):
    (tmp_path / "in").mkdir()
    for i in range(3):
        _rgb(40, 30, i).save(tmp_path / "in" / f"{i}.png")
    out = tmp_path / "runs" / "out"
    cmd = [sys.executable, "-c", SLOW_LOAD, "--input", str(tmp_path / "in"), "--ckpt", ckpt[0], "--model", MODEL,
           "--save_val_results_to", str(out), "--num_workers", workers]
    code, printed = signal_group_when(cmd, lambda printed: "loading" in printed, signal.SIGTERM, cwd=ROOT)
    assert code == 128 + signal.SIGTERM, printed
    assert printed.strip().splitlines()[-1] == ("SIGTERM received: stopped before the first of 3 images; nothing "
                                                "was written")
    assert sorted(os.listdir(tmp_path)) == ["in"]  # and not the folder made for the outputs


SEARCH_SHOWN = ("import sys\nimport predict\nfind = predict.find_images\n"
                "def shown(*args, **kwargs):\n    print('searching', flush=True)\n    return find(*args, **kwargs)\n"
                "predict.find_images = shown\nsys.exit(predict.main(sys.argv[1:]))\n")


def test_a_signal_during_a_search_that_would_not_end_stops_it(tmp_path, ckpt):
    """A ** glob follows linked folders: two links back to their own folder make its search endless (a slow
    network share is long too); Ctrl-C must still stop it."""
    loop = tmp_path / "loop"
    loop.mkdir()
    _rgb(20, 16).save(loop / "a.png")
    for name in ("s1", "s2"):
        (loop / name).symlink_to(".")
    cmd = [sys.executable, "-c", SEARCH_SHOWN, "--input", str(loop / "**" / "*.png"), "--ckpt", ckpt[0],
           "--save_val_results_to", str(tmp_path / "out"), "--num_workers", "0"]
    code, printed = signal_group_when(cmd, lambda printed: "searching" in printed, signal.SIGINT, cwd=ROOT,
                                      timeout=60)
    assert code == 128 + signal.SIGINT, printed
    assert printed.strip().splitlines()[-1] == ("SIGINT received: stopped; nothing was written (the search of "
                                                "--input was cut short)")
    assert sorted(os.listdir(tmp_path)) == ["loop"]


KILLED_WORKER = ("import os, signal, sys, time, multiprocessing\nimport predict\nload = predict.load_segmenter\n"
                 "def killing(*args, **kwargs):\n"
                 "    os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL); time.sleep(5)\n"
                 "    return load(*args, **kwargs)\n"
                 "predict.load_segmenter = killing\nsys.exit(predict.main(sys.argv[1:]))\n")


def test_a_worker_killed_while_the_model_loads_is_one_line_that_blames_no_file(tmp_path, ckpt, capsys,
                                                                              monkeypatch):
    """The out-of-memory killer may take a DataLoader worker at any time; PyTorch then raises in the main process
    wherever it is, also inside the checkpoint's loading: said in one line, not as a damaged checkpoint."""
    (tmp_path / "in").mkdir()
    _rgb(40, 30).save(tmp_path / "in" / "a.png")
    args = ["--input", str(tmp_path / "in"), "--ckpt", ckpt[0], "--model", MODEL, "--save_val_results_to",
            str(tmp_path / "out"), "--num_workers", "2"]
    done = subprocess.run([sys.executable, "-c", KILLED_WORKER, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(r"error: a DataLoader worker \(pid \d+\) was killed by signal Killed; .*--num_workers", last)
    assert not (tmp_path / "out").exists()

    def damaged(*args, **kwargs):  # the same death, caught by the checkpoint's reader
        try:
            raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. ")
        except RuntimeError as exc:
            raise CheckpointError(f"cannot read checkpoint {ckpt[0]}: killed (truncated?)") from exc

    monkeypatch.setattr(predict, "load_segmenter", damaged)
    assert predict.main(args) == 1
    assert capsys.readouterr().err.startswith("error: a DataLoader worker (pid 7) was killed by signal Killed; ")


@pytest.mark.parametrize("flag, value", [("--stride", "0"), ("--window", "-5"), ("--val_batch_size", "0"),
                                         ("--crop_size", "0"), ("--tta_scales", "0"),
                                         ("--num_workers", "-1")])
def test_sizes_that_are_not_positive_are_a_one_line_error(tmp_path, inputs, ckpt, capsys, flag, value):
    code, out = _run(tmp_path, ckpt[0], "--slide", "--tta", "--crop_val", flag, value)
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(f"error: {flag} must") and "\n" not in err
    assert not out.exists()


def test_windows_that_skip_pixels_are_refused_without_slide_too(tmp_path, inputs, ckpt, capsys, monkeypatch):
    """Huge images are predicted in windows whether or not --slide is given: the pair is checked before any work."""
    monkeypatch.setattr(predict, "WHOLE_IMAGE_MAX_PIXELS", 40 * 30 - 1)  # every input here is huge
    code, out = _run(tmp_path, ckpt[0], "--window", "8", "--stride", "12")
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == "error: --stride 12 is larger than --window 8: pixels would be skipped"
    assert not out.exists()


def test_every_output_file_of_every_input_is_distinct():
    rels = ["a.jpg", "a.png", "a_png.bmp", "x.jpg", "x_label.jpg", "B.png", "b.jpg", "c.png"]
    names = outputs.output_names([("in/" + rel, rel) for rel in rels])
    assert names == ["a_jpg", "a_png_2", "a_png", "x_jpg", "x_label_jpg", "B_png", "b_jpg", "c"]
    written = [file for name in names for file in outputs.output_files(name)]
    assert len(set(written)) == len(written)
    assert outputs.output_names([("in/" + rel, rel) for rel in rels]) == names  # deterministic


def test_an_output_file_never_takes_the_name_of_a_folder_of_outputs():
    """x.png/y.jpg puts its outputs in the folder x.png, where x.jpg's colour image would go."""
    rels = ["x.jpg", os.path.join("x.png", "y.jpg"), os.path.join("X.PNG", "w", "v.jpg"), "z.jpg"]
    names = outputs.output_names([("in/" + rel, rel) for rel in rels])
    assert names == ["x_jpg", os.path.join("x.png", "y"), os.path.join("X.PNG", "w", "v"), "z"]
    folders = {"x.png", "x.png/w"}  # as a case-insensitive disk sees them
    assert not folders & set(outputs.output_files(names[0])) and "z.png" in outputs.output_files(names[3])


def test_unwritable_output_folder_and_full_disk_are_one_line(ckpt, tmp_path, capsys, monkeypatch):
    _rgb(20, 16).save(tmp_path / "a.png")
    _rgb(20, 16, seed=1).save(tmp_path / "b.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    base = ["--input", str(tmp_path / "*.png"), "--ckpt", ckpt[0], "--num_workers", "0", "--val_batch_size", "1"]
    assert predict.main(base + ["--save_val_results_to", str(blocker / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: --save_val_results_to {blocker / 'out'}: {blocker} is a file, not a folder; choose another folder"

    real_write = outputs.ImageWriter.write

    def second_fails(writer, stem, *args):
        if stem == "b":
            raise OSError(28, "No space left on device")
        real_write(writer, stem, *args)

    monkeypatch.setattr(outputs.ImageWriter, "write", second_fails)
    assert predict.main(base + ["--save_val_results_to", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "b.png (No space left on device); the 1 images before it are complete" in err
    assert os.listdir(tmp_path / "out") == ["a.png"]


def test_non_utf8_paths_print_escaped_not_as_a_crash(ckpt, tmp_path):
    import subprocess

    folder = os.path.join(os.fsencode(tmp_path), b"in\xff")
    os.makedirs(folder)
    _rgb(20, 16).save(os.fsdecode(os.path.join(folder, b"x\xfe.png")))
    out = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out\xff"))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as under an en_US.UTF-8 locale
    proc = subprocess.run([sys.executable, "predict.py", "--input", os.fsdecode(folder), "--ckpt", ckpt[0],
                           "--num_workers", "0", "--save_val_results_to", out], cwd=ROOT, env=env,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert b"1 done, 0 skipped" in proc.stdout and os.listdir(os.fsencode(out)) == [b"x\xfe.png"]


def test_an_image_too_large_for_one_pass_is_predicted_in_windows(tmp_path, inputs, ckpt, monkeypatch, capsys):
    """Images over WHOLE_IMAGE_MAX_PIXELS go through the sliding-window path, as with --slide, and say so."""
    _, explicit = _run(tmp_path, ckpt[0], "--output", "label", "--slide", "--window", "24", "--stride", "16")
    explicit_labels = _labels(explicit)
    os.rename(explicit, tmp_path / "explicit")
    capsys.readouterr()
    monkeypatch.setattr(predict, "WHOLE_IMAGE_MAX_PIXELS", 40 * 30 - 1)  # every input here is larger
    code, auto = _run(tmp_path, ckpt[0], "--output", "label", "--window", "24", "--stride", "16")
    assert code == 0
    assert "an image of 41x33 is predicted in sliding windows (--window 24 --stride 16)" in capsys.readouterr().out
    auto_labels = _labels(auto)
    assert auto_labels.keys() == explicit_labels.keys()
    assert all(np.array_equal(labels, explicit_labels[name]) for name, labels in auto_labels.items())
    # --crop_val scores a smaller copy; at the input size its scores would take C floats a pixel (5 GB for 4200x4100)
    os.rename(auto, tmp_path / "auto")
    _, shrunk = _run(tmp_path, ckpt[0], "--output", "label", "--crop_val", "--crop_size", "24", "--slide",
                     "--window", "64", "--stride", "48")  # one window: the whole resized image
    os.rename(shrunk, tmp_path / "shrunk")
    shrunk = tmp_path / "shrunk"
    capsys.readouterr()
    code, auto = _run(tmp_path, ckpt[0], "--output", "label", "--crop_val", "--crop_size", "24")
    assert code == 0
    printed = capsys.readouterr().out
    assert "an image of 41x33 is labelled at its shorter side 24 and its labels are scaled back" in printed
    assert all(np.array_equal(labels, _labels(shrunk)[name]) for name, labels in _labels(auto).items())


def test_an_image_over_max_image_pixels_is_skipped_with_its_path(tmp_path, inputs, ckpt, capsys):
    """b.JPG has 41x33 = 1,353 pixels, just over the limit; the 40x30 images are under it."""
    code, out = _run(tmp_path, ckpt[0], "--max_image_pixels", "1300")
    captured = capsys.readouterr()
    assert code == 1 and "8 done, 1 skipped" in captured.out
    assert captured.err.strip() == (f"skipped: image {tmp_path / 'in' / 'b.JPG'} is 41x33 = 1,353 pixels, more than "
                                    "--max_image_pixels 1300 (a guard against decompression bombs); if you trust the "
                                    "file, raise it or pass --max_image_pixels none")
    assert not os.path.exists(out / "b.png") and os.path.isfile(out / "gray.png")


def test_an_image_too_small_for_the_model_is_skipped_not_fatal(tmp_path, inputs, ckpt, capsys):
    """A 2x2 icon among photos: one "skipped" line naming it, the other images are predicted, exit status 1."""
    _rgb(2, 2).save(tmp_path / "in" / "icon.png")
    code, out = _run(tmp_path, ckpt[0])
    err = capsys.readouterr().err
    assert code == 1 and os.path.isfile(out / "b.png") and not os.path.exists(out / "icon.png")
    assert re.search(r"skipped: .*icon\.png: an image of 2x2 is smaller than this model takes: at least 3x3 pixels$",
                     err.strip())
    assert "Traceback" not in err


def _colours(path) -> set:
    with Image.open(path) as img:
        return {tuple(c) for c in np.asarray(img.convert("RGB")).reshape(-1, 3)}


def test_colours_come_from_the_checkpoint_record_unless_flags_say_otherwise(tmp_path, inputs, ckpt, capsys):
    """--dataset folder without --classes draws with the names and palette the checkpoint records; a flag for
    another class count, or folder with nothing recorded, is one line."""
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    recorded = tmp_path / "recorded.pth"
    torch.save({"model_state": ckpt[2].state_dict(), "model_name": MODEL, "class_names": ["bg", "crack", "rust"],
                "palette": palette}, recorded)
    for flags in (["--dataset", "folder"], []):
        code, out = _run(tmp_path, str(recorded), *flags)
        assert code == 0 and _colours(out / "b.png") <= {tuple(c) for c in palette}
        assert "note" not in capsys.readouterr().out
        os.rename(out, tmp_path / f"out{len(flags)}")
    code, _ = _run(tmp_path, ckpt[0], "--dataset", "folder")  # records nothing
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == (f"error: {ckpt[0]} does not record its class names; --dataset folder needs --classes "
                                 "PATH/classes.yaml for them and their colours")
    code, _ = _run(tmp_path, str(recorded), "--dataset", "cityscapes")
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == (f"error: --dataset cityscapes names 19 classes but {recorded} predicts "
                                 f"{NUM_CLASSES}; give the classes it was trained on (--classes classes.yaml for your "
                                 "own)")
    code, out = _run(tmp_path, ckpt[0])  # nothing recorded, nothing given: indices in VOC colours, said once
    assert code == 0 and "note: " in capsys.readouterr().out
