"""tools/import_annotations.py: LabelMe and COCO files written here, masks checked pixel for pixel, bad input,
and main.py training on the result."""
import base64
import io
import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
from PIL import Image

import main as train_script
from tests.conftest import ROOT
from tests.helpers import coco_run_lengths, signal_group_when
from tools import import_annotations as tool

WIDTH, HEIGHT = 48, 40
BACKGROUND, CAT, DOG, VOID = 0, 1, 2, 255


def _image(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(path)


def _png_base64(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _labelme(folder, stem, shapes, image=True, image_data=None, size=(WIDTH, HEIGHT)):
    """A LabelMe file ``stem.json`` (and ``stem.jpg`` when ``image``); shapes as (label, type, points[, mask])."""
    os.makedirs(folder, exist_ok=True)
    if image:
        _image(os.path.join(folder, stem + ".jpg"), seed=len(stem))
    entries = [{"label": s[0], "shape_type": s[1], "points": s[2], "group_id": None, "flags": {},
                **({"mask": s[3]} if len(s) > 3 else {})} for s in shapes]
    spec = {"version": "5.5.0", "flags": {}, "shapes": entries, "imagePath": stem + ".jpg", "imageData": image_data,
            "imageWidth": size[0], "imageHeight": size[1]}
    with open(os.path.join(folder, stem + ".json"), "w") as f:
        json.dump(spec, f)


def _run(capsys, *argv):
    code = tool.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _mask(root, stem):
    return np.asarray(Image.open(os.path.join(root, "masks", stem + ".png")))


def _boxes(*boxes, fill=BACKGROUND):
    """The expected mask: (value, x0, y0, x1, y1) boxes, inclusive, painted in order."""
    mask = np.full((HEIGHT, WIDTH), fill, np.uint8)
    for value, x0, y0, x1, y1 in boxes:
        mask[y0:y1 + 1, x0:x1 + 1] = value
    return mask


def test_labelme_shapes_are_drawn_in_file_order_pixel_for_pixel(tmp_path, capsys):
    bitmap = np.zeros((3, 4), np.uint8)
    bitmap[[0, 2], :] = 1
    _labelme(tmp_path / "lm", "a", [
        ("cat", "rectangle", [[20, 10], [4, 2]]),              # corners in either order
        ("dog", "polygon", [[10, 5], [20, 5], [10, 15]]),       # covers part of the cat
        ("cat", "rectangle", [[18, 4], [30, 8]]),               # covers part of the dog, merges with the cat
        ("dog", "line", [[0, 30], [47, 30]]),                   # --line_width 4: rows 29..32
        ("cat", "polygon", [[1, 1], [5, 5]]),                   # two points: skipped
        ("cat", "polygon", [[60, 50], [70, 50], [70, 60]]),     # outside the image: skipped
        ("__ignore__", "rectangle", [[40, 0], [47, 3]]),        # labelme2voc's void label
        ("dog", "mask", [[5, 20], [8, 22]], _png_base64(bitmap)),
        ("cat", "oriented_rectangle", [[34, 12], [44, 12], [44, 16], [34, 16]]),
    ])
    code, out, err = _run(capsys, "--from", "labelme", tmp_path / "lm", "--out", tmp_path / "out", "--line_width", 4)
    assert code == 0, err
    expected = _boxes((CAT, 4, 2, 20, 10))
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    expected[(x >= 10) & (y >= 5) & ((x - 10) + (y - 5) <= 10)] = DOG  # PIL fills the triangle with its outline
    expected[4:9, 18:31] = CAT
    expected[29:33, :] = DOG
    expected[0:4, 40:48] = VOID
    expected[[20, 22], 5:9] = DOG
    expected[12:17, 34:45] = CAT
    assert np.array_equal(_mask(tmp_path / "out", "a"), expected)
    assert "a.json shape 5: has 2 points; a polygon needs at least 3" in err
    assert "a.json shape 6 (polygon 'cat'): lies outside the 48x40 image" in err
    assert "background, cat, dog" in out and "pixels per class" in out


def test_circles_and_points_are_discs_of_their_radius(tmp_path, capsys):
    _labelme(tmp_path / "lm", "a", [("cat", "circle", [[10, 10], [10, 16]]), ("dog", "point", [[35, 20]])])
    assert _run(capsys, "--from", "labelme", tmp_path / "lm", "--out", tmp_path / "out", "--point_size", 3)[0] == 0
    mask = _mask(tmp_path / "out", "a")
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    for value, (cx, cy), radius in ((CAT, (10, 10), 6), (DOG, (35, 20), 3)):
        assert (mask[(x - cx) ** 2 + (y - cy) ** 2 <= (radius - 1) ** 2] == value).all()
        assert (mask[(x - cx) ** 2 + (y - cy) ** 2 > (radius + 1) ** 2] != value).all()


def test_embedded_image_data_is_written_when_the_file_is_absent(tmp_path, capsys):
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (1, 2, 3)).save(buffer, format="PNG")
    _labelme(tmp_path / "lm", "a", [("cat", "rectangle", [[0, 0], [3, 3]])], image=False,
             image_data=base64.b64encode(buffer.getvalue()).decode())
    assert _run(capsys, "--from", "labelme", tmp_path / "lm", "--out", tmp_path / "out")[0] == 0
    with open(tmp_path / "out" / "images" / "a.png", "rb") as f:
        assert f.read() == buffer.getvalue()


def _coco(tmp_path, annotations, images=None):
    """A COCO file with categories 4 (crack), 9 (rust) and 1, a project name no annotation uses, as
    Roboflow writes; one image of WIDTH x HEIGHT whose file_name has a folder in front."""
    images_dir = tmp_path / "images"
    images_dir.mkdir(exist_ok=True)
    _image(images_dir / "x.jpg")
    spec = {"images": images or [{"id": 1, "file_name": "export/x.jpg", "width": WIDTH, "height": HEIGHT}],
            "categories": [{"id": 9, "name": "rust"}, {"id": 1, "name": "my-project"}, {"id": 4, "name": "crack"}],
            "annotations": [{"id": i + 1, "image_id": 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(spec))
    return path, images_dir


def test_coco_polygons_rle_and_crowd_pixel_for_pixel(tmp_path, capsys):
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO

    rust_area = _boxes((1, 15, 10, 30, 20))
    compressed = mask_api.encode(np.asfortranarray(rust_area))
    crowd_area = _boxes((1, 0, 25, 10, 30))
    path, images_dir = _coco(tmp_path, [
        {"category_id": 4, "segmentation": [[4, 4, 20, 4, 20, 16, 4, 16]]},
        {"category_id": 9, "segmentation": {"size": [HEIGHT, WIDTH], "counts": compressed["counts"].decode()}},
        {"category_id": 4, "segmentation": {"size": [HEIGHT, WIDTH], "counts": coco_run_lengths(crowd_area)},
         "iscrowd": 1},
        {"category_id": 4, "segmentation": [[35, 30, 45, 30, 40, 38], [1, 1, 2, 2]]},  # the second part: 2 points
        {"category_id": 9, "bbox": [1, 1, 3, 3], "segmentation": []},
        {"category_id": 9, "segmentation": {"size": [HEIGHT, WIDTH], "counts": "0"}},  # damaged: one run of 0
    ])
    code, out, err = _run(capsys, "--from", "coco", path, "--images", images_dir, "--out", tmp_path / "out")
    assert code == 0, err
    crack, rust = 1, 2  # by category id (4, 9); the unused project category is no class
    assert "classes" in out and "background, crack, rust" in out
    coco = COCO(str(path))
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    for annotation in coco.dataset["annotations"][:3]:
        expected[coco.annToMask(annotation).astype(bool)] = crack if annotation["category_id"] == 4 else rust
    expected[mask_api.decode(mask_api.frPyObjects([[35, 30, 45, 30, 40, 38]], HEIGHT, WIDTH))[..., 0] > 0] = crack
    mask = _mask(tmp_path / "out", "x")
    assert np.array_equal(mask, expected)
    assert (mask[rust_area.astype(bool)] == rust).all() and (mask[crowd_area.astype(bool)] == crack).all()
    assert "annotation 4 ('crack'): polygon 2 has 2 points" in err and "its other polygons are kept" in err
    assert "annotation 5 ('rust'): has no segmentation" in err
    assert "annotation 6 ('rust'): its RLE counts do not add up to the 48x40 pixels" in err


def test_classes_unknown_labels_and_background_options(tmp_path, capsys):
    _labelme(tmp_path / "lm", "a", [("cat", "rectangle", [[0, 0], [9, 9]]), ("dog", "rectangle", [[20, 20], [29, 29]])])
    code, _, err = _run(capsys, "--from", "labelme", tmp_path / "lm", "--out", tmp_path / "o1", "--classes", "dog")
    assert code == 1 and err.strip().count("\n") == 0
    assert "label 'cat'" in err and "--unknown ignore" in err and not os.path.exists(tmp_path / "o1" / "masks")

    code, out, err = _run(capsys, "--from", "labelme", tmp_path / "lm", "--out", tmp_path / "o2", "--classes", "dog",
                          "--unknown", "ignore", "--background", "ignore")
    assert code == 0, err
    assert np.array_equal(_mask(tmp_path / "o2", "a"), _boxes((VOID, 0, 0, 9, 9), (1, 20, 20, 29, 29), fill=VOID))
    assert "background, dog" in out

    # an image with only ignored regions and background passes the folder check (no "0/255 mistake" alarm)
    _labelme(tmp_path / "lm3", "b", [("cat", "rectangle", [[0, 0], [29, 29]])])
    code, _, err = _run(capsys, "--from", "labelme", tmp_path / "lm3", "--out", tmp_path / "o3", "--classes", "dog",
                        "--unknown", "ignore")
    assert code == 0, err
    assert set(np.unique(_mask(tmp_path / "o3", "b")).tolist()) == {0, VOID}


def test_bad_files_are_skipped_with_a_line_each_and_the_rest_imported(tmp_path, capsys):
    lm = tmp_path / "lm"
    _labelme(lm, "good", [("cat", "rectangle", [[0, 0], [3, 3]])])
    _labelme(lm, "empty", [])
    _labelme(lm, "no_image", [("cat", "rectangle", [[0, 0], [3, 3]])], image=False)
    _labelme(lm, "resized", [("cat", "rectangle", [[0, 0], [3, 3]])], size=(96, 80))
    (lm / "coco_by_mistake.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    (lm / "broken.json").write_text("{not json")
    code, out, err = _run(capsys, "--from", "labelme", lm, "--out", tmp_path / "out", "--val_fraction", "0.5")
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("skipped: ") for line in lines)
    assert any("broken.json: is not valid JSON" in line for line in lines)
    assert any("coco_by_mistake.json: is not a LabelMe file" in line and "--from coco" in line for line in lines)
    assert any("no_image.jpg does not exist" in line for line in lines)
    assert any("resized.json: the annotations are for a 96x80 image" in line and "is 48x40" in line for line in lines)
    assert "imported 2 image(s)" in out and "1 train, 1 val" in out and "without any shape" in out


def test_nothing_imported_exits_non_zero_and_out_must_be_new(tmp_path, capsys):
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "x.json").write_text("[]")
    code, _, err = _run(capsys, "--from", "labelme", tmp_path / "lm", "--out", tmp_path / "out")
    assert code == 1 and "error: nothing could be imported" in err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.txt").write_text("")
    code, _, err = _run(capsys, "--from", "labelme", tmp_path / "lm", "--out", tmp_path / "used")
    assert code == 1 and "already holds files (old.txt" in err


def test_coco_stem_collision_and_missing_pycocotools(tmp_path, capsys, monkeypatch):
    path, images_dir = _coco(tmp_path, [{"category_id": 4, "segmentation": [[4, 4, 20, 4, 20, 16]]}], images=[
        {"id": 1, "file_name": "x.jpg", "width": WIDTH, "height": HEIGHT},
        {"id": 2, "file_name": "other/x.png", "width": WIDTH, "height": HEIGHT}])
    _image(images_dir / "x.png")
    code, _, err = _run(capsys, "--from", "coco", path, "--images", images_dir, "--out", tmp_path / "out")
    assert code == 0 and "image 2 (other/x.png): has the same file name stem 'x'" in err

    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if not installed
    code, _, err = _run(capsys, "--from", "coco", path, "--images", images_dir, "--out", tmp_path / "out2")
    assert code == 1 and "pip install pycocotools==2.0.11" in err


def test_windows_paths_outer_spaces_flat_shapes_and_commas_in_names(tmp_path, capsys):
    """A COCO export made on Windows (export\\x.jpg) finds its image by base name; a name with an outer space, which
    a split file cannot keep, is skipped alone; a shape on one line says it has no area, not that it lies outside;
    a class name with a comma is printed as one name."""
    path, images_dir = _coco(tmp_path, [{"category_id": 4, "segmentation": [[4, 4, 20, 4, 20, 16]]},
                                        {"category_id": 9, "segmentation": [[5, 5, 10, 10, 15, 15]]},
                                        {"category_id": 9, "segmentation": [[60, 5, 70, 5, 70, 9]]}], images=[
        {"id": 1, "file_name": "export\\x.jpg", "width": WIDTH, "height": HEIGHT},
        {"id": 2, "file_name": "photo .jpg", "width": WIDTH, "height": HEIGHT}])
    _image(images_dir / "photo .jpg")
    spec = json.loads(path.read_text())
    spec["categories"][2]["name"] = "crack, wide"
    path.write_text(json.dumps(spec))
    code, out, err = _run(capsys, "--from", "coco", path, "--images", images_dir, "--out", tmp_path / "out")
    assert code == 0, err
    assert "image 2 (photo .jpg): has the file name stem 'photo ', which begins or ends with a space" in err
    assert "annotation 2 ('rust'): covers no pixel of the 48x40 image: it has no area" in err
    assert "annotation 3 ('rust'): lies outside the 48x40 image" in err
    assert f"classes ({tmp_path / 'out' / 'classes.yaml'}): background, 'crack, wide', rust\n" in out
    assert sorted(os.listdir(tmp_path / "out" / "images")) == ["x.jpg"] and _mask(tmp_path / "out", "x").max() == 1


def test_main_trains_on_the_imported_folder(tmp_path, capsys):
    for i in range(4):
        _labelme(tmp_path / "lm", f"img{i}", [("cat", "rectangle", [[2 + i, 2], [20, 30]]),
                                              ("dog", "polygon", [[25, 5], [45, 5], [35, 35 - i]])])
    assert _run(capsys, "--from", "labelme", tmp_path / "lm", "--out", tmp_path / "data")[0] == 0
    assert train_script.main([
        "--dataset", "folder", "--data_root", str(tmp_path / "data"), "--model", "deeplabv3plus_mobilenet",
        "--no-pretrained_backbone", "--crop_size", "32", "--batch_size", "2", "--num_workers", "0",
        "--total_itrs", "2", "--val_interval", "2", "--checkpoint_dir", str(tmp_path / "ck"),
        "--results_dir", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert "cat" in out and "dog" in out  # the class IoU table names the imported classes
    assert os.path.isfile(tmp_path / "ck" / "latest_deeplabv3plus_mobilenet_folder_os16.pth")


def _roboflow_coco(tmp_path):
    """A COCO export as Roboflow writes it: category 0 is the dataset's name (no annotation uses it) and the
    super-category of the others, and two ids are both called 'crack'."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    _image(images_dir / "x.jpg")
    spec = {"images": [{"id": 1, "file_name": "x.jpg", "width": WIDTH, "height": HEIGHT}],
            "categories": [{"id": 0, "name": "cracks-v2", "supercategory": "none"},
                           {"id": 1, "name": "crack", "supercategory": "cracks-v2"},
                           {"id": 2, "name": "crack", "supercategory": "cracks-v2"},
                           {"id": 3, "name": "rust", "supercategory": "cracks-v2"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
                            {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0,
                             "segmentation": [[20, 20, 30, 20, 30, 30, 20, 30]]},
                            {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 0,
                             "segmentation": [[40, 0, 47, 0, 47, 10, 40, 10]]}]}
    path = tmp_path / "_annotations.coco.json"
    path.write_text(json.dumps(spec))
    return path, images_dir


def test_coco_categories_that_share_a_name_are_one_class(tmp_path, capsys):
    path, images_dir = _roboflow_coco(tmp_path)
    (tmp_path / "out").mkdir()  # an empty folder (a mount point, say) is filled, not replaced
    code, out, err = _run(capsys, "--from", "coco", path, "--images", images_dir, "--out", tmp_path / "out")
    assert code == 0, err
    assert "note: categories 1, 2 share the name 'crack': their shapes are one class" in out
    assert "classes (" in out and "background, crack, rust" in out
    mask = _mask(tmp_path / "out", "x")
    assert (mask[0:10, 0:10] == 1).all() and (mask[20:30, 20:30] == 1).all() and (mask[0:10, 40:47] == 2).all()
    assert sorted(os.listdir(tmp_path / "out")) == ["classes.yaml", "images", "masks", "splits"]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]


def test_a_failed_import_leaves_no_out_and_a_rerun_works(tmp_path, capsys):
    """The disk fills up (here: a file size limit) while the second image is copied: --out is not created, nor the
    folder made for it, nothing is left beside it, and the same command works once there is room."""
    lm = tmp_path / "lm"
    _labelme(lm, "a", [("cat", "rectangle", [[0, 0], [9, 9]])])
    _labelme(lm, "b", [("dog", "rectangle", [[0, 0], [9, 9]])], image=False, size=(200, 200))
    noise = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(lm / "b.jpg", quality=100)  # about 100 kB
    argv = [sys.executable, "tools/import_annotations.py", "--from", "labelme", str(lm), "--out",
            str(tmp_path / "runs" / "out")]

    def file_size_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, preexec_fn=file_size_limit,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {tmp_path / 'runs' / 'out'} (File too large); nothing was written there")
    assert sorted(os.listdir(tmp_path)) == ["lm"]
    code, out, err = _run(capsys, *argv[2:])
    assert code == 0, err
    assert "imported 2 image(s)" in out
    assert sorted(os.listdir(tmp_path / "runs" / "out" / "masks")) == ["a.png", "b.png"]


HANGING_IMPORT = ("import runpy, sys, time; import datasets.annotations as annotations\n"
                  "def hang(*args, **kwargs):\n    print('importing', flush=True); time.sleep(120)\n"
                  "annotations.import_to_folder = hang; sys.argv = sys.argv[1:]\n"
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def test_a_signal_during_an_import_leaves_nothing_and_says_so(tmp_path):
    lm = tmp_path / "lm"
    _labelme(lm, "a", [("cat", "rectangle", [[0, 0], [9, 9]])])
    out = tmp_path / "runs" / "out"
    cmd = [sys.executable, "-c", HANGING_IMPORT, "tools/import_annotations.py", "--from", "labelme", str(lm), "--out",
           str(out)]
    code, printed = signal_group_when(cmd, lambda printed: "importing" in printed, signal.SIGTERM, cwd=ROOT)
    assert code == 128 + signal.SIGTERM, printed
    assert printed.strip().splitlines()[-1] == f"SIGTERM received: stopped; nothing was written to {out}"
    assert sorted(os.listdir(tmp_path)) == ["lm"]  # no staging folder, and not the folder made for --out


def test_a_killed_import_s_hidden_folder_goes_with_the_next_import(tmp_path, capsys):
    """SIGKILL (the OOM killer, a power cut) gives no chance to clean up: the next import of that --out removes the
    folder the killed one was building, says so, and imports."""
    lm = tmp_path / "lm"
    _labelme(lm, "a", [("cat", "rectangle", [[0, 0], [9, 9]])])
    argv = ["tools/import_annotations.py", "--from", "labelme", str(lm), "--out", str(tmp_path / "out")]
    killed = subprocess.Popen([sys.executable, "-c", HANGING_IMPORT, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert killed.stdout.readline().strip() == "importing"  # inside its staging folder
        (hidden,) = [name for name in os.listdir(tmp_path) if name.startswith(".tmp-out-")]
    finally:
        killed.kill()
        killed.wait()
    code, out, err = _run(capsys, *argv[1:])
    assert code == 0, err
    assert f"Removed 1 unfinished import folder(s) that a killed run left in {tmp_path}" in out and hidden in out
    assert sorted(os.listdir(tmp_path)) == ["lm", "out"]


def test_an_out_folder_that_overlaps_the_input_is_refused(tmp_path, capsys):
    lm = tmp_path / "lm"
    _labelme(lm, "a", [("cat", "rectangle", [[0, 0], [9, 9]])])
    os.symlink(lm, tmp_path / "link")
    for out, clash in ((f"{lm}{os.sep}", "is the input"), (tmp_path / "link" / "dataset", "is inside the input folder"),
                       (tmp_path, "holds the input")):
        code, _, err = _run(capsys, "--from", "labelme", lm, "--out", out)
        assert code == 1 and err.count("\n") == 1 and f"error: --out {out} {clash} {lm};" in err
    assert sorted(os.listdir(lm)) == ["a.jpg", "a.json"] and sorted(os.listdir(tmp_path)) == ["link", "lm"]


def test_labelme_files_that_are_not_utf8_are_skipped_by_name(tmp_path, capsys):
    """Windows exports: a JSON saved in cp1252 or GBK, a file name in a code page (not UTF-8 on this file system),
    a byte-order mark (read as UTF-8), an imagePath that names no file."""
    lm = tmp_path / "lm"
    _labelme(lm, "good", [("cat", "rectangle", [[0, 0], [9, 9]])])
    _labelme(lm, "bom", [("cat", "rectangle", [[0, 0], [9, 9]])])
    (lm / "bom.json").write_bytes(b"\xef\xbb\xbf" + (lm / "bom.json").read_bytes())
    for stem, name, encoding in (("western", "caf\xe9.jpg", "cp1252"), ("chinese", "\u88c2\u7f1d.jpg", "gbk")):
        _image(lm / name)
        spec = {"shapes": [{"label": "cat", "shape_type": "rectangle", "points": [[0, 0], [9, 9]]}],
                "imagePath": name, "imageData": None, "imageWidth": WIDTH, "imageHeight": HEIGHT}
        (lm / f"{stem}.json").write_bytes(json.dumps(spec, ensure_ascii=False).encode(encoding))
    code_page = os.fsdecode(b"caf\xe9")  # a name that is not UTF-8: Python holds it with a lone surrogate
    _labelme(lm, code_page, [("dog", "rectangle", [[0, 0], [9, 9]])])
    code, out, err = _run(capsys, "--from", "labelme", lm, "--out", tmp_path / "out")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("skipped: ") for line in lines)
    assert any(f"{lm / 'western.json'}: is not UTF-8 text (byte 0xe9" in line for line in lines)
    assert any(f"{lm / 'chinese.json'}: is not UTF-8 text" in line and "save it as UTF-8" in line for line in lines)
    assert any("caf\\udce9.json: the name 'caf\\udce9' is not UTF-8 text" in line for line in lines)
    assert "imported 2 image(s)" in out and f"classes ({tmp_path / 'out' / 'classes.yaml'}): background, cat\n" in out
    with open(tmp_path / "out" / "splits" / "train.txt", encoding="utf-8") as f:
        listed = f.read().split()
    with open(tmp_path / "out" / "splits" / "val.txt", encoding="utf-8") as f:
        assert sorted(listed + f.read().split()) == ["bom", "good"]


def test_images_over_max_image_pixels_are_skipped_by_name(tmp_path, capsys):
    """48x40 = 1,920 pixels: just over a limit of 1,900; an image embedded in its JSON is checked too."""
    lm = tmp_path / "lm"
    _labelme(lm, "big", [("cat", "rectangle", [[0, 0], [9, 9]])])
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT)).save(buffer, format="PNG")
    _labelme(lm, "embedded", [("cat", "rectangle", [[0, 0], [9, 9]])], image=False,
             image_data=base64.b64encode(buffer.getvalue()).decode())
    _labelme(lm, "small", [("cat", "rectangle", [[0, 0], [9, 9]])], size=(40, 30))
    Image.new("RGB", (40, 30)).save(lm / "small.jpg")
    code, out, err = _run(capsys, "--from", "labelme", lm, "--out", tmp_path / "out", "--max_image_pixels", 1900)
    assert code == 0, err
    assert (f"skipped: {lm / 'big.json'}: image {lm / 'big.jpg'} is 48x40 = 1,920 pixels, more than "
            "--max_image_pixels 1900 (a guard against decompression bombs)") in err
    assert f"skipped: {lm / 'embedded.json'}: the image embedded in {lm / 'embedded.json'} is 48x40" in err
    assert "imported 1 image(s)" in out
    assert _run(capsys, "--from", "labelme", lm, "--out", tmp_path / "all", "--max_image_pixels", "none")[0] == 0
    assert len(os.listdir(tmp_path / "all" / "images")) == 3


def test_names_that_differ_only_in_case_are_one_name(tmp_path, capsys):
    """IMG_1.json and img_1.json: on Windows and macOS their images and masks would be one file, so the second is
    skipped (here on Linux too: the folder must train wherever it is copied)."""
    lm = tmp_path / "lm"
    _labelme(lm, "IMG_1", [("cat", "rectangle", [[0, 0], [9, 9]])])
    _labelme(lm, "img_1", [("dog", "rectangle", [[0, 0], [9, 9]])])
    code, out, err = _run(capsys, "--from", "labelme", lm, "--out", tmp_path / "out")
    assert code == 0, err
    assert err.strip() == (f"skipped: {lm / 'img_1.json'}: has the file name stem 'img_1', which only the case tells "
                           f"from 'IMG_1' of {lm / 'IMG_1.json'} (one name on Windows and macOS); rename one of the "
                           "images")
    assert os.listdir(tmp_path / "out" / "masks") == ["IMG_1.png"]
