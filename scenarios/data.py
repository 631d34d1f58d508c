"""Real data files: where they are looked for, how they are checked, read, cached and downloaded.

**Data root.** Files live under one folder, the data root, as ``<root>/mnist/``,
``<root>/fashion-mnist/`` and ``<root>/omniglot/``. The root is, by priority: an explicit
path (the command line's ``--data-root``, or the experiment file's top-level ``data_root``,
which reach the builders as the ``data_root`` parameter of the real-data families), else the
environment variable ``LIFELONG_DATA``, else ``./data`` in the current directory. Relative
paths are taken from the current directory.

**Checks.** Every file is checked against checksums written in this module (sha256 of the
official MNIST and Fashion-MNIST ``.gz`` files; for Omniglot, the sha256 of the rebuilt
zips shipped with the project's shared data and the md5 of the official zips, which
``lifelong data download`` fetches). A missing, truncated or corrupt file raises
:class:`DataError`, whose message names the file expected, the path searched and how to
obtain the file.

**Reading.** The idx files are read directly (gzip, big-endian header, magic 2051 for images
and 2049 for labels); gunzipping MNIST takes about 0.3 s, so they are not cached on disk,
only kept in memory for the life of the process. The Omniglot zips are read with
:mod:`zipfile` and their 32460 PNGs decoded and resized to 28x28 with Pillow once (several
seconds); the result is cached as ``.npz`` under the cache folder, keyed by the zip's
checksum: ``$LIFELONG_CACHE``, else ``$XDG_CACHE_HOME/lifelong``, else ``~/.cache/lifelong``.

Example:
    >>> from scenarios.data import resolve_data_root
    >>> resolve_data_root("/srv/data").as_posix()
    '/srv/data'
    >>> images, labels = load_mnist_like("mnist", train=False)  # doctest: +SKIP
    >>> images.shape, labels[:3].tolist()                       # doctest: +SKIP
    ((10000, 28, 28), [7, 2, 1])
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from scenarios.base import ScenarioError

ENV_DATA = "LIFELONG_DATA"
ENV_CACHE = "LIFELONG_CACHE"
DEFAULT_ROOT = "data"
ROOT_HELP = (f"the data root is set by --data-root, the experiment file's data_root or ${ENV_DATA} "
             f"(default ./{DEFAULT_ROOT})")
OMNIGLOT_SIZE = 28
_DECODE_VERSION = 1  # bump when the Omniglot decoding changes, so that old caches are ignored


class DataError(ScenarioError):
    """A data file is missing, truncated or corrupt, or could not be downloaded."""


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset, with what is known about its good versions.

    Attributes:
        dataset: the dataset's folder under the data root (``mnist``).
        name: path of the file inside that folder.
        size: size in bytes of the reference version (the first of ``sha256``).
        sha256: accepted sha256 digests.
        urls: official download locations, tried in order.
        md5: further accepted md5 digests (the official Omniglot zips).
    """

    dataset: str
    name: str
    size: int
    sha256: tuple[str, ...]
    urls: tuple[str, ...]
    md5: tuple[str, ...] = ()


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
_SPLITS_URL = "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/omniglot/splits/vinyals/"


def _idx(dataset: str, name: str, size: int, sha256: str, mirrors: tuple[str, ...]) -> DataFile:
    return DataFile(dataset, name, size, (sha256,), tuple(m + name for m in mirrors))


# Checksums from the SHA256SUMS files of the project's shared data (the official releases for
# MNIST and Fashion-MNIST) and, for the official Omniglot zips, torchvision's md5 list.
FILES: dict[str, tuple[DataFile, ...]] = {
    "mnist": (
        _idx("mnist", "train-images-idx3-ubyte.gz", 9912422,
             "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", _MNIST_MIRRORS),
        _idx("mnist", "train-labels-idx1-ubyte.gz", 28881,
             "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", _MNIST_MIRRORS),
        _idx("mnist", "t10k-images-idx3-ubyte.gz", 1648877,
             "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", _MNIST_MIRRORS),
        _idx("mnist", "t10k-labels-idx1-ubyte.gz", 4542,
             "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", _MNIST_MIRRORS),
    ),
    "fashion-mnist": (
        _idx("fashion-mnist", "train-images-idx3-ubyte.gz", 26421880,
             "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", (_FASHION_MIRROR,)),
        _idx("fashion-mnist", "train-labels-idx1-ubyte.gz", 29515,
             "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", (_FASHION_MIRROR,)),
        _idx("fashion-mnist", "t10k-images-idx3-ubyte.gz", 4422102,
             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", (_FASHION_MIRROR,)),
        _idx("fashion-mnist", "t10k-labels-idx1-ubyte.gz", 5148,
             "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", (_FASHION_MIRROR,)),
    ),
    "omniglot": (
        DataFile("omniglot", "images_background.zip", 8394302,
                 ("0ca674f1c02257123afb1ae3337b536f9c4d0181ca780d9af318151efb4e45bc",),
                 (_OMNIGLOT_URL + "images_background.zip",), md5=("68d2efa1b9178cc56df9314c21c6e718",)),
        DataFile("omniglot", "images_evaluation.zip", 5732517,
                 ("fd45a41e89479c48ddc20ba2db00bee78297e97e337db2b9eba978d143193271",),
                 (_OMNIGLOT_URL + "images_evaluation.zip",), md5=("6b91aef0f799c5bb55b94e3f2daec811",)),
        DataFile("omniglot", "splits_vinyals/train.txt", 133244,
                 ("984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",), (_SPLITS_URL + "train.txt",)),
        DataFile("omniglot", "splits_vinyals/val.txt", 21312,
                 ("11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",), (_SPLITS_URL + "val.txt",)),
        DataFile("omniglot", "splits_vinyals/test.txt", 50372,
                 ("845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",), (_SPLITS_URL + "test.txt",)),
        DataFile("omniglot", "splits_vinyals/trainval.txt", 154556,
                 ("5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",), (_SPLITS_URL + "trainval.txt",)),
    ),
}
DATASETS: tuple[str, ...] = tuple(FILES)


def resolve_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The absolute data root: ``explicit`` if given, else ``$LIFELONG_DATA``, else ``./data``.

    Nothing is checked here; a missing file is reported when it is read.
    """
    chosen = explicit or os.environ.get(ENV_DATA) or DEFAULT_ROOT
    return Path(chosen).expanduser().absolute()


def cache_dir() -> Path:
    """Folder for decoded caches: ``$LIFELONG_CACHE``, else ``$XDG_CACHE_HOME/lifelong``, else
    ``~/.cache/lifelong`` (created when first written)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lifelong"


def data_file(dataset: str, name: str) -> DataFile:
    """The :class:`DataFile` ``name`` of ``dataset`` (a ``KeyError`` if this module does not know it)."""
    for f in FILES[dataset]:
        if f.name == name:
            return f
    raise KeyError(f"{dataset} has no file {name!r}")


def _how_to_get(f: DataFile, folder: Path) -> str:
    return (f"run `lifelong data download {f.dataset}` on a machine with internet access, or copy the "
            f"official file ({f.urls[0]}) into {folder}/ by hand; {ROOT_HELP}.")


def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_digest_memo: dict[tuple[str, int, int, str], str] = {}


def _digest(path: Path, algorithm: str) -> str:
    """``_hash_file`` remembered per (path, size, mtime), so that building a stream for several
    seeds hashes each file once."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, algorithm)
    if key not in _digest_memo:
        _digest_memo[key] = _hash_file(path, algorithm)
    return _digest_memo[key]


def _accepted(f: DataFile, path: Path, memo: bool = True) -> bool:
    digest = _digest if memo else _hash_file
    return digest(path, "sha256") in f.sha256 or bool(f.md5) and digest(path, "md5") in f.md5


def problem(f: DataFile, root: Path) -> str | None:
    """Why the file ``f`` under ``root`` is unusable (one paragraph), or ``None`` if it is good."""
    path = root / f.dataset / f.name
    label = f"{f.dataset} file {f.name}"
    if not path.is_file():
        return f"{label} is missing: looked for {path}. To get it, {_how_to_get(f, path.parent)}"
    if _accepted(f, path):
        return None
    sha = _digest(path, "sha256")
    size = path.stat().st_size
    state = (f"is truncated: {size} bytes, expected {f.size}" if size < f.size
             else f"is corrupt: its sha256 is {sha}, expected {f.sha256[0]}")
    return f"{label} at {path} {state}. Delete it and get it again: {_how_to_get(f, path.parent)}"


def verified_path(dataset: str, name: str, root: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The path of a good copy of ``dataset``/``name`` under the data root, and its sha256.

    Raises:
        DataError: the file is missing, truncated or corrupt (the message says how to get it).
    """
    f, base = data_file(dataset, name), resolve_data_root(root)
    message = problem(f, base)
    if message is not None:
        raise DataError(message)
    path = base / dataset / name
    return path, _digest(path, "sha256")


# -- idx (MNIST, Fashion-MNIST) ------------------------------------------------------------------

def read_idx(raw: bytes, source: str = "idx data") -> np.ndarray:
    """Parse uncompressed idx bytes: big-endian int32 magic (2051 images, 2049 labels), the
    counts, then uint8 data. Returns (N, rows, cols) or (N,) uint8 (a read-only view of ``raw``).

    Example:
        >>> import struct
        >>> read_idx(struct.pack(">ii", 2049, 3) + bytes([7, 8, 9])).tolist()
        [7, 8, 9]
    """
    if len(raw) < 8:
        raise DataError(f"{source}: {len(raw)} bytes is too short for an idx header")
    magic = int.from_bytes(raw[:4], "big")
    dims = {2051: 3, 2049: 1}.get(magic)
    if dims is None:
        raise DataError(f"{source}: magic number {magic} is neither 2051 (images) nor 2049 (labels)")
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{source}: header says {shape} but holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


_idx_memo: dict[tuple[str, str], np.ndarray] = {}


def load_idx(dataset: str, name: str, root: str | os.PathLike | None = None) -> np.ndarray:
    """The verified, decoded idx ``.gz`` file ``dataset``/``name`` (kept in memory per process).

    Example:
        >>> x = load_idx("mnist", "t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
        >>> x.shape, x.dtype                                    # doctest: +SKIP
        ((10000, 28, 28), dtype('uint8'))
    """
    path, sha = verified_path(dataset, name, root)
    key = (str(path), sha)
    if key not in _idx_memo:
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{dataset} file {name} at {path} cannot be decompressed ({err}). Delete it and get it "
                            f"again: {_how_to_get(data_file(dataset, name), path.parent)}") from None
        _idx_memo[key] = read_idx(raw, str(path))
    return _idx_memo[key]


def load_mnist_like(dataset: str, train: bool, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of MNIST or Fashion-MNIST.

    ``train`` picks the 60000 training or the 10000 test examples.
    """
    prefix = "train" if train else "t10k"
    images = load_idx(dataset, f"{prefix}-images-idx3-ubyte.gz", root)
    labels = load_idx(dataset, f"{prefix}-labels-idx1-ubyte.gz", root)
    if len(images) != len(labels):
        raise DataError(f"{dataset}: {len(images)} {prefix} images but {len(labels)} labels")
    return images, labels


# -- Omniglot -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Omniglot:
    """Every Omniglot image, 28x28, strokes bright (255) on a dark (0) background, as in MAML.

    Attributes:
        images: (32460, 28, 28) uint8.
        char: (32460,) index into ``characters`` of each image.
        drawer: (32460,) drawer number 1..20 of each image.
        characters: ``"Alphabet/characterNN"`` of every character, background set first,
            each set sorted.
        background: per character, whether it comes from ``images_background.zip``.
    """

    images: np.ndarray
    char: np.ndarray
    drawer: np.ndarray
    characters: tuple[str, ...]
    background: np.ndarray

    def alphabets(self, which: str = "all") -> list[str]:
        """Sorted alphabet names of the ``background``, ``evaluation`` or ``all`` (background first) sets."""
        out = []
        for is_bg in {"background": (True,), "evaluation": (False,), "all": (True, False)}[which]:
            out += sorted({c.split("/")[0] for c, bg in zip(self.characters, self.background) if bg == is_bg})
        return out

    def image_table(self) -> np.ndarray:
        """(characters, 20) indices of each character's images, by drawer."""
        order = np.lexsort((self.drawer, self.char))
        return order.reshape(len(self.characters), -1)


def _decode_omniglot_zip(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All PNGs of one Omniglot zip as (N, 28, 28) uint8 and their member names, sorted by name."""
    from PIL import Image  # Pillow comes with torchvision

    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        images = np.empty((len(names), OMNIGLOT_SIZE, OMNIGLOT_SIZE), dtype=np.uint8)
        for i, name in enumerate(names):
            with Image.open(io.BytesIO(z.read(name))) as im:
                # MAML's preprocessing: Lanczos down to 28x28; then invert, so strokes are bright.
                small = im.convert("L").resize((OMNIGLOT_SIZE, OMNIGLOT_SIZE), Image.LANCZOS)
            images[i] = 255 - np.asarray(small)
    return images, np.array(names)


def _cached_zip(path: Path, sha: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded zip from the cache (keyed by its checksum), decoding and caching it on a miss."""
    cache = cache_dir() / f"omniglot-{path.stem}-{sha[:16]}-{OMNIGLOT_SIZE}px-v{_DECODE_VERSION}.npz"
    try:
        with np.load(cache, allow_pickle=False) as data:
            return data["images"], data["names"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass  # absent or unreadable: decode again and rewrite it
    try:
        images, names = _decode_omniglot_zip(path)
    except (zipfile.BadZipFile, OSError, zlib.error) as err:
        raise DataError(f"omniglot file {path.name} at {path} cannot be read ({err}). Delete it and get it "
                        f"again: {_how_to_get(data_file('omniglot', path.name), path.parent)}") from None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, images=images, names=names)
        os.replace(tmp, cache)
    except OSError as err:
        warnings.warn(f"could not write the Omniglot cache {cache} ({err}); set ${ENV_CACHE} to a "
                      f"writable folder to avoid decoding the images again", stacklevel=3)
    return images, names


_omniglot_memo: dict[tuple[str, str], Omniglot] = {}


def load_omniglot(root: str | os.PathLike | None = None) -> Omniglot:
    """All 1623 Omniglot characters x 20 drawers at 28x28 (see :class:`Omniglot`).

    Cold, the PNGs are decoded (several seconds); afterwards, the cache is read (a fraction of
    a second) and the result kept in memory for the life of the process.
    """
    parts = [verified_path("omniglot", f"images_{s}.zip", root) for s in ("background", "evaluation")]
    key = tuple(sha for _, sha in parts)
    if key not in _omniglot_memo:
        images, chars, drawers, characters, background = [], [], [], [], []
        for (path, sha), is_bg in zip(parts, (True, False)):
            imgs, names = _cached_zip(path, sha)
            # Member names: images_<set>/<Alphabet>/characterNN/<id>_<drawer>.png
            split = [n.split("/") for n in names.tolist()]
            keys = [f"{p[1]}/{p[2]}" for p in split]
            first = len(characters)
            unique = sorted(set(keys))
            index = {k: first + i for i, k in enumerate(unique)}
            characters += unique
            background += [is_bg] * len(unique)
            chars.append(np.array([index[k] for k in keys], dtype=np.int64))
            drawers.append(np.array([int(p[3].split("_")[1].split(".")[0]) for p in split], dtype=np.int64))
            images.append(imgs)
        _omniglot_memo[key] = Omniglot(np.concatenate(images), np.concatenate(chars), np.concatenate(drawers),
                                       tuple(characters), np.array(background))
    return _omniglot_memo[key]


def read_vinyals_split(name: str, root: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """The Vinyals et al. split ``train``, ``val``, ``test`` or ``trainval`` as
    ``(\"Alphabet/characterNN\", degrees)`` pairs, one per class (a rotation is its own class)."""
    path, _ = verified_path("omniglot", f"splits_vinyals/{name}.txt", root)
    out = []
    for line in path.read_text(encoding="utf-8").split():
        alphabet, character, rot = line.split("/")
        out.append((f"{alphabet}/{character}", int(rot.removeprefix("rot"))))
    return out


# -- checking and downloading ---------------------------------------------------------------------

def check(dataset: str, root: str | os.PathLike | None = None) -> list[str]:
    """Problems (one paragraph each) with the files of ``dataset`` under the root; empty if all are good."""
    base = resolve_data_root(root)
    return [m for f in FILES[dataset] if (m := problem(f, base)) is not None]


def _fetch(url: str, dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def download(dataset: str, root: str | os.PathLike | None = None, timeout: float = 30.0,
             log: Callable[[str], None] = lambda line: None) -> list[Path]:
    """Fetch the files of ``dataset`` that are missing or damaged from their official sources,
    check them and move them into place; return the paths of all its files.

    Each file goes to a temporary name first, so an interrupted download leaves nothing that
    passes for the real file. ``timeout`` bounds each connection attempt and each read.

    Raises:
        DataError: a file could not be fetched from any source (no internet, server error) or
            the fetched file fails its checksum; the message says how to copy it by hand.
    """
    if dataset not in FILES:
        raise DataError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    base = resolve_data_root(root)
    paths = []
    for f in FILES[dataset]:
        path = base / f.dataset / f.name
        paths.append(path)
        if problem(f, base) is None:
            log(f"{path}: already present and verified")
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"cannot create {path.parent}: {err.strerror or err}") from None
        failures = []
        for url in f.urls:
            log(f"{path}: fetching {url}")
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            os.close(fd)
            tmp = Path(tmp)
            try:
                _fetch(url, tmp, timeout)
                if not _accepted(f, tmp, memo=False):
                    failures.append(f"{url}: checksum mismatch (sha256 {_hash_file(tmp, 'sha256')})")
                    continue
                os.replace(tmp, path)
                break
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", None) or err
                failures.append(f"{url}: {reason}")
            finally:
                tmp.unlink(missing_ok=True)
        else:
            raise DataError(
                f"could not download {f.dataset} file {f.name}: " + "; ".join(failures) +
                f". If this machine has no internet access, fetch the file elsewhere and copy it to {path}.")
    return paths
