"""predict.py never writes over its inputs nor reads its own results back as inputs, and a write error names what is
in the way (videos: tests/scripts/test_video.py)."""
import os

import pytest

import predict
from tests.scripts.test_predict import MODEL, _rgb, ckpt  # noqa: F401  (ckpt is a fixture)


def _photos(folder, names) -> dict:
    for seed, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        _rgb(20, 16, seed).save(folder / name)
    return _contents(folder)


def _contents(folder) -> dict:
    """Relative path -> bytes of every file under ``folder``."""
    return {os.path.relpath(os.path.join(where, name), folder): open(os.path.join(where, name), "rb").read()
            for where, _, names in os.walk(folder) for name in names}


def _predict(inputs, out, ckpt_path, *extra) -> int:
    return predict.main(["--input", str(inputs), "--ckpt", ckpt_path, "--model", MODEL, "--num_workers", "0",
                         "--save_val_results_to", str(out), *extra])


@pytest.mark.parametrize("spelling", ["as given", "trailing slash", "relative", "symlink"])
def test_results_over_the_photos_are_refused_before_any_work_in_any_spelling(tmp_path, ckpt, capsys, monkeypatch,
                                                                              spelling):
    photos = tmp_path / "photos"
    before = _photos(photos, ["a.png", "b.png"])
    (tmp_path / "link").symlink_to(photos)
    monkeypatch.chdir(tmp_path)
    out = {"as given": str(photos), "trailing slash": f"{photos}{os.sep}", "relative": "photos",
           "symlink": "link"}[spelling]
    assert _predict(photos, out, ckpt[0]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: --save_val_results_to {out} would write {os.path.join(out, 'a.png')} over the input "
        f"{photos / 'a.png'} (and 1 more); nothing was written: give another folder, e.g. --save_val_results_to "
        f"{os.path.normpath(out)}_predictions")
    assert _contents(photos) == before


def test_the_file_system_decides_what_is_the_same_file(tmp_path, ckpt, capsys):
    """Another name of a photo (a hard link here; on a case-insensitive disk, another case) is the photo; so is
    --input naming the photo itself."""
    photos = tmp_path / "photos"
    before = _photos(photos, ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    os.link(photos / "a.png", out / "a.png")
    assert _predict(photos, out, ckpt[0]) == 1
    assert f"would write {out / 'a.png'} over the input {photos / 'a.png'}; nothing" in capsys.readouterr().err
    assert _predict(photos / "a.png", photos, ckpt[0]) == 1
    assert f"would write {photos / 'a.png'} over the input {photos / 'a.png'}; nothing" in capsys.readouterr().err
    assert _contents(photos) == before


def test_photos_and_results_may_share_a_folder_and_a_rerun_predicts_the_photos_only(tmp_path, ckpt, capsys):
    photos = tmp_path / "photos"
    _photos(photos, ["a.jpg", "sub/b.jpg"])
    assert _predict(photos, photos, ckpt[0], "--output", "color", "overlay") == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out
    first = _contents(photos)
    assert sorted(first) == ["a.jpg", "a.png", "a_overlay.png", "sub/b.jpg", "sub/b.png", "sub/b_overlay.png"]
    assert _predict(photos, photos, ckpt[0], "--output", "color", "overlay") == 0
    printed = capsys.readouterr().out
    assert f"note: skipped 4 file(s) in {photos} that earlier runs wrote (such as {photos / 'a.png'})" in printed
    assert "2 done, 0 skipped" in printed and _contents(photos) == first
    assert _predict(photos / "a_overlay.png", tmp_path / "again", ckpt[0]) == 0  # named, a result is an input
    assert os.listdir(tmp_path / "again") == ["a_overlay.png"]
    assert _predict(tmp_path / "again", tmp_path / "more", ckpt[0]) == 1  # a folder of results only
    assert capsys.readouterr().err.strip() == (
        f"error: --input {tmp_path / 'again'} holds only results of earlier runs (1 file(s), such as "
        f"{tmp_path / 'again' / 'a_overlay.png'}); give the folder of the photos or videos")


@pytest.mark.parametrize("results", ["data/results", "./data/results/"])
def test_results_inside_the_input_folder_are_never_read_back(tmp_path, ckpt, capsys, monkeypatch, results):
    data = tmp_path / "data"
    _photos(data, ["x.png", "y.png"])
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert _predict("data", results, ckpt[0], "--output", "color", "label") == 0
        assert "2 done, 0 skipped" in capsys.readouterr().out
    assert sorted(os.listdir(data / "results")) == ["x.png", "x_label.png", "y.png", "y_label.png"]
    os.makedirs(data / "results" / "older")
    _rgb(20, 16).save(data / "results" / "older" / "z.png")  # an older version's result: no mark, same folder
    assert _predict("data/**/*.png", results, ckpt[0]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out


def test_a_photo_in_an_output_folder_inside_the_input_is_never_replaced(tmp_path, ckpt, capsys):
    """The search leaves out an output folder inside --input, so a photo there is no input: a file without the
    mark at an output path is refused there before any work. Elsewhere (a folder of the original's results) it is
    replaced, as the original replaced it."""
    data = tmp_path / "data"
    before = _photos(data, ["x.jpg", "sub/x.png", "sub/y.png"])
    assert _predict(data, data / "sub", ckpt[0]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: --save_val_results_to {data / 'sub'} lies inside --input {data}, which is not searched there, and "
        f"holds {data / 'sub' / 'x.png'}, which this project's outputs would replace; it carries no mark of them (a "
        "photo? results of the original or of versions before 6 December carry none either); nothing was written: "
        "move it away, or give another folder")
    assert _contents(data) == before
    out = tmp_path / "out"
    _photos(out, ["x.png"])  # as the original's predict.py writes x.jpg's colour mask
    for _ in range(2):
        assert _predict(data / "x.jpg", out, ckpt[0], "--output", "color", "label") == 0
    assert sorted(os.listdir(out)) == ["x.png", "x_label.png"]
    os.remove(data / "sub" / "x.png")
    assert _predict(data, data / "sub", ckpt[0]) == 0  # its own results are replaced by a rerun
    assert _predict(data, data / "sub", ckpt[0]) == 0


def test_an_input_whose_output_name_would_be_too_long_is_skipped_alone(tmp_path, ckpt, capsys):
    """A 250-byte name is a file name the disk takes; its overlay, 12 bytes more, is not: that input is skipped with
    a line and the others are predicted (it stopped the whole run)."""
    photos = tmp_path / "photos"
    long_stem = "p" * 246
    _photos(photos, [long_stem + ".jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "out"
    assert _predict(photos, out, ckpt[0], "--output", "color", "overlay") == 1
    printed = capsys.readouterr()
    assert printed.err.strip() == (f"skipped: {photos / (long_stem + '.jpg')}: the names of its outputs are too long "
                                   "for the file system (over the 255 bytes a file name may have, or a path too long); "
                                   "shorten its name or the output folder's path")
    assert "2 done, 1 skipped" in printed.out
    assert {"b.png", "b_overlay.png", "c.png", "c_overlay.png", long_stem + ".png"} == set(os.listdir(out))


def test_write_errors_say_what_is_in_the_way(tmp_path, ckpt, capsys):
    photos = tmp_path / "photos"
    _photos(photos, ["a.png", "sub/b.png"])
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)
    assert _predict(photos, out, ckpt[0]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: cannot write the results of {photos / 'a.png'} (Is a directory); the 0 images before it are complete "
        f"in {out}; a folder is in the way at {out / 'a.png'}: move or rename it, or choose another folder")
    os.rmdir(out / "a.png")
    (out / "sub").write_text("")
    assert _predict(photos, out, ckpt[0]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: cannot write the results of {photos / 'sub' / 'b.png'} (File exists); the 1 images before it are "
        f"complete in {out}; a file is in the way at {out / 'sub'}, where a folder goes: move or rename it, or "
        "choose another folder")
    assert not [name for name in os.listdir(out) if name.startswith(".tmp")]
    linked = tmp_path / "linked"
    linked.symlink_to(tmp_path / "unmounted" / "results")  # the output folder: a link to a folder not there
    assert _predict(photos, linked, ckpt[0]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: --save_val_results_to {linked} cannot be written (File exists); {linked} is a link to "
        f"{tmp_path / 'unmounted' / 'results'}, which does not exist: create that folder, or choose another folder")
