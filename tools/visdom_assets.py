"""Install the Visdom server's web assets from the npm registry, so the dashboard works offline.

Visdom 0.2.4 fetches its JavaScript, CSS and fonts from CDNs when its server starts, and crashes
where those cannot be reached. This script downloads the same files as npm tarballs (``npm pack``),
checks each tarball's pinned sha256, and writes the files where the server looks for them, with the
``version.built`` marker that makes it skip its own downloads.

Usage: python tools/visdom_assets.py [--cache DIR] [--force]
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from typing import Dict, NamedTuple

DEFAULT_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "npm")
MATHJAX_DIR = "js/mathjax/2.7.5"
MATHJAX_FILES = ("MathJax.js", "config/Safe.js", "config/TeX-AMS-MML_HTMLorMML.js", "extensions/Safe.js",
                 "jax/output/SVG/config.js", "jax/output/SVG/jax.js", "jax/output/SVG/fonts/TeX/fontdata.js",
                 "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js")
GLYPHS = "dist/fonts/glyphicons-halflings-regular"


class Package(NamedTuple):
    """An npm tarball, its sha256, and {path inside the package: path under visdom's static/}."""

    spec: str
    sha256: str
    files: Dict[str, str]


PACKAGES = (
    Package("jquery@3.1.1", "1edfdafd71f26e2730a2029f5c4971598f55f57627fd17c3410914aed2293821",
            {"dist/jquery.min.js": "js/jquery.min.js"}),
    Package("bootstrap@3.3.7", "a9de9f9d74b46743821bda60e5f81233c7a2dc83ad4db60d0c0e396dc255fc2a",
            {"dist/js/bootstrap.min.js": "js/bootstrap.min.js", "dist/css/bootstrap.min.css": "css/bootstrap.min.css",
             **{f"{GLYPHS}.{ext}": f"fonts/glyphicons-halflings-regular.{ext}"
                for ext in ("eot", "woff2", "woff", "ttf", "svg")}}),
    Package("react@16.2.0", "c0d1fc3e4157e03898012d3bd6360879a58f1178ab839859a15433aa60ed5499",
            {"umd/react.production.min.js": "js/react-react.min.js"}),
    Package("react-dom@16.2.0", "6596694ba625de26e265c4ae5b7a5f568022568573a05bbdb2659792bcc101b6",
            {"umd/react-dom.production.min.js": "js/react-dom.min.js"}),
    Package("react-modal@3.1.10", "d656a396f68e2a9b2329087840ea005e5da0408410dd8064e1c30ffeaa9d5133",
            {"dist/react-modal.min.js": "js/react-modal.min.js"}),
    Package("plotly.js-dist-min@2.11.1", "25f1ca783c4e71e01c96031fc85ab114aebf931ba563d250d1ec59421cb79113",
            {"plotly.min.js": "js/plotly-plotly.min.js"}),
    Package("sjcl@1.0.7", "9fe881f59d05151dd4e38e4eca65821e773f1f8a7eb01f6fdb819008b0ce544e", {"sjcl.js": "js/sjcl.js"}),
    Package("layout-bin-packer@1.4.0", "f5d72447b16e3a912c5001bbda3b7308dfc48749882c8ff4ce8fc0c265176f7a",
            {"dist/layout-bin-packer.js": "js/layout_bin_packer.js",
             "dist/layout-bin-packer.js.map": "js/layout-bin-packer.js.map"}),
    Package("d3@3.5.17", "da49ebf01f88a039c748eb4aa682fec45672f7c2abca3b363633b8f835065b35", {"d3.min.js": "js/d3.v3.min.js"}),
    Package("d3-selection-multi@1.0.1", "449fab3b22583c83882bb326857c0be04321cd087162ec1bfe872214bd0b9827",
            {"build/d3-selection-multi.js": "js/d3-selection-multi.v1.js"}),
    Package("save-svg-as-png@1.4.17", "639bdcaeb3e945de6282670b88a5d058605431aca7d6890661227c6f7cc3f55a",
            {"lib/saveSvgAsPng.js": "js/saveSvgAsPng.js"}),
    Package("react-resizable@1.4.6", "8855b10f7961dfce72bb032575769b40581a61aa716d0f5d426c4d5e184aa622",
            {"css/styles.css": "css/react-resizable-styles.css"}),
    Package("react-grid-layout@0.16.3", "b57981208742e5be47a4aa761194103d5c0e3ddd473d7fd8989c608dd9345550",
            {"css/styles.css": "css/react-grid-layout-styles.css"}),
    Package("classnames@2.2.5", "38c83d48c787e08af4e79e591bb4e3b519e84c492507b16d593a98f576ea8959",
            {"index.js": "fonts/classnames"}),
    Package("mathjax@2.7.5", "7fc8acc02a4930cdc59983ba4003686208af39fc855245fa8ae8d4b27fab781b",
            {name: f"{MATHJAX_DIR}/{name}" for name in MATHJAX_FILES}),
)
# The server also looks for the svg font under the URL-fragment name the CDN list uses.
EXTRA_COPIES = {"fonts/glyphicons-halflings-regular.svg": "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"}


class AssetError(RuntimeError):
    """A tarball that cannot be fetched or does not match its pinned checksum."""


def visdom_static_dir() -> str:
    import visdom

    return os.path.join(os.path.dirname(visdom.__file__), "static")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(package: Package, cache: str) -> str:
    """The package's tarball in ``cache`` (``npm pack`` when missing), checked against its sha256."""
    name, version = package.spec.rsplit("@", 1)
    path = os.path.join(cache, f"{name.replace('/', '-')}-{version}.tgz")
    if not os.path.isfile(path):
        os.makedirs(cache, exist_ok=True)
        if shutil.which("npm") is None:
            raise AssetError("npm is not installed (apt-get install npm); it fetches the dashboard's files")
        result = subprocess.run(["npm", "pack", "--silent", package.spec, "--pack-destination", cache],
                                capture_output=True, text=True)
        if result.returncode != 0 or not os.path.isfile(path):
            raise AssetError(f"npm pack {package.spec} failed: {result.stderr.strip()[-300:]}")
    actual = _sha256(path)
    if actual != package.sha256:
        os.remove(path)
        raise AssetError(f"{path} has sha256 {actual}, expected {package.sha256}; removed it, run again")
    return path


def install(static_dir: str, cache: str = DEFAULT_CACHE, force: bool = False) -> int:
    """Write every asset under ``static_dir``; returns how many files were written."""
    written = 0
    for package in PACKAGES:
        targets = {src: os.path.join(static_dir, dst) for src, dst in package.files.items()}
        if not force and all(os.path.isfile(t) for t in targets.values()):
            continue
        with tarfile.open(fetch(package, cache)) as tar:
            for src, target in targets.items():
                member = tar.extractfile(f"package/{src}")
                if member is None:
                    raise AssetError(f"{package.spec} has no file {src}")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as out:
                    shutil.copyfileobj(member, out)
                written += 1
    for src, dst in EXTRA_COPIES.items():
        shutil.copyfile(os.path.join(static_dir, src), os.path.join(static_dir, dst))
    import visdom

    with open(os.path.join(static_dir, "version.built"), "w") as f:
        f.write(visdom.__version__)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="where npm tarballs are kept between runs")
    parser.add_argument("--force", action="store_true", help="rewrite files that are already there")
    args = parser.parse_args()
    try:
        static_dir = visdom_static_dir()
        count = install(static_dir, args.cache, args.force)
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Visdom assets ready in {static_dir} ({count} files written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
