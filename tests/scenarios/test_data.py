"""Data files: the data root, reading the real files, checks, errors, cache and download."""

import gzip
import io
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scenarios import data
from scenarios.data import DataError, load_idx, load_mnist_like, load_omniglot, read_vinyals_split, resolve_data_root
from simulator.cli import main


def test_data_root_priority_explicit_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    assert resolve_data_root() == tmp_path / "data"
    monkeypatch.setenv("LIFELONG_DATA", "/from/env")
    assert resolve_data_root() == Path("/from/env")
    assert resolve_data_root("relative") == tmp_path / "relative"
    assert resolve_data_root("/explicit") == Path("/explicit")


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_mnist_and_fashion_counts_and_shapes(data_root, dataset):
    x, y = load_mnist_like(dataset, True, data_root)
    xt, yt = load_mnist_like(dataset, False, data_root)
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert x.dtype == np.uint8 and set(np.unique(y)) == set(range(10))
    assert np.bincount(y).min() >= 5000 and np.bincount(yt).sum() == 10000


def test_mnist_pixels_match_the_raw_bytes(data_root):
    # Read train image 0 independently: 16-byte header, then 784 bytes of pixels.
    with gzip.open(data_root / "mnist" / "train-images-idx3-ubyte.gz") as fh:
        header, pixels = fh.read(16), fh.read(784)
    assert int.from_bytes(header[:4], "big") == 2051
    raw = np.frombuffer(pixels, dtype=np.uint8).reshape(28, 28)
    images = load_idx("mnist", "train-images-idx3-ubyte.gz", data_root)
    assert np.array_equal(images[0], raw)
    assert int(raw.sum()) == 27525 and raw[14, 13:19].tolist() == [81, 240, 253, 253, 119, 25]
    labels = load_idx("mnist", "train-labels-idx1-ubyte.gz", data_root)
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_omniglot_counts(data_root):
    om = load_omniglot(data_root)
    assert om.images.shape == (32460, 28, 28) and om.images.dtype == np.uint8
    assert int(om.background.sum()) == 964 and int((~om.background).sum()) == 659
    assert len(om.alphabets("background")) == 30 and len(om.alphabets("evaluation")) == 20
    per_char = np.bincount(om.char)
    assert len(per_char) == 1623 and (per_char == 20).all()
    table = om.image_table()
    assert table.shape == (1623, 20)
    assert (om.drawer[table] == np.arange(1, 21)).all()


def test_omniglot_images_are_resized_pngs_with_bright_strokes(data_root):
    from PIL import Image

    om = load_omniglot(data_root)
    first = om.characters.index("Alphabet_of_the_Magi/character01")
    with zipfile.ZipFile(data_root / "omniglot" / "images_background.zip") as z:
        name = sorted(n for n in z.namelist() if "Alphabet_of_the_Magi/character01/" in n)[0]
        with Image.open(io.BytesIO(z.read(name))) as im:
            assert im.size == (105, 105)
            expected = 255 - np.asarray(im.convert("L").resize((28, 28), Image.LANCZOS))
    image = om.images[om.image_table()[first, 0]]
    assert np.array_equal(image, expected)
    assert image[0, 0] == 0 and image.max() > 200  # dark background, bright strokes


def test_vinyals_split_sizes(data_root):
    sizes = {name: len(read_vinyals_split(name, data_root)) for name in ("train", "val", "test", "trainval")}
    assert sizes == {"train": 4112, "val": 688, "test": 1692, "trainval": 4800}
    test = read_vinyals_split("test", data_root)
    assert test[:4] == [("Gurmukhi/character42", d) for d in (0, 90, 180, 270)]
    chars = {c for c, _ in read_vinyals_split("trainval", data_root)} | {c for c, _ in test}
    assert len(chars) == 1623


# -- errors: missing, truncated and corrupt files ---------------------------------------------------

def _copy_mnist(data_root: Path, to: Path) -> Path:
    shutil.copytree(data_root / "mnist", to / "mnist")
    return to / "mnist" / "train-labels-idx1-ubyte.gz"


def test_missing_file_names_file_path_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        load_mnist_like("mnist", True, tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz is missing" in message
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "lifelong data download mnist" in message and "LIFELONG_DATA" in message


def test_truncated_file_is_reported(data_root, tmp_path):
    target = _copy_mnist(data_root, tmp_path)
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz at .* is truncated: 1000 bytes, expected 28881"):
        load_mnist_like("mnist", True, tmp_path)


def test_wrong_checksum_is_reported(data_root, tmp_path):
    target = _copy_mnist(data_root, tmp_path)
    content = bytearray(target.read_bytes())
    content[-100] ^= 0xFF
    target.write_bytes(bytes(content))
    with pytest.raises(DataError) as err:
        load_mnist_like("mnist", True, tmp_path)
    message = str(err.value)
    assert "is corrupt: its sha256 is" in message and str(target) in message
    assert "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c" in message
    assert "lifelong data download mnist" in message


def test_truncated_omniglot_zip_is_reported(data_root, tmp_path):
    shutil.copytree(data_root / "omniglot", tmp_path / "omniglot")
    target = tmp_path / "omniglot" / "images_evaluation.zip"
    target.write_bytes(target.read_bytes()[:5000])
    with pytest.raises(DataError, match="images_evaluation.zip at .* is truncated"):
        load_omniglot(tmp_path)


def _experiment(tmp_path: Path, scenario: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(f'{scenario}\n[strategies.finetune]\nepochs = 1\n')
    return path


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt"])
def test_cli_exits_2_without_traceback_for_a_bad_data_file(data_root, tmp_path, capsys, damage):
    if damage != "missing":
        target = _copy_mnist(data_root, tmp_path / "root")
        content = target.read_bytes()
        flipped = content[:-20] + bytes([content[-20] ^ 0xFF]) + content[-19:]
        target.write_bytes(content[:100] if damage == "truncated" else flipped)
    exp = _experiment(tmp_path, '[scenario]\nname = "split-mnist"\nnum_tasks = 1')
    code = main(["run", str(exp), "--data-root", str(tmp_path / "root"), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.startswith("lifelong: error: mnist file")
    assert {"missing": "is missing", "truncated": "is truncated", "corrupt": "is corrupt"}[damage] in err


def test_data_root_from_the_experiment_file_and_the_command_line(data_root, tmp_path, monkeypatch, capsys):
    from simulator.config import load_experiment

    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    exp = _experiment(tmp_path, f'data_root = "{tmp_path / "elsewhere"}"\n[scenario]\nname = "split-mnist"\nnum_tasks = 1')
    assert load_experiment(exp).scenario_params.data_root == str(tmp_path / "elsewhere")
    assert load_experiment(exp, data_root=str(data_root)).scenario_params.data_root == str(data_root.absolute())
    # The file's root lacks the files: the command line's root wins and the run goes through.
    code = main(["run", str(exp), "--data-root", str(data_root), "--out", str(tmp_path / "out"), "--quiet",
                 "--set", "scenario.train_per_class=20", "--set", "evaluation.episodes=2"])
    assert code == 0, capsys.readouterr().err


# -- the data command --------------------------------------------------------------------------------

def test_data_check_reports_good_and_damaged_roots(data_root, tmp_path, capsys):
    assert main(["data", "check", "mnist", "omniglot", "--data-root", str(data_root)]) == 0
    assert "all files present and intact" in capsys.readouterr().out
    assert main(["data", "check", "fashion-mnist", "--data-root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("is missing") == 4


def test_download_without_network_fails_fast_with_a_clear_message(tmp_path, monkeypatch, capsys):
    # Port 9 on the loopback refuses connections at once: an offline machine, deterministically.
    offline = {name: tuple(data.DataFile(f.dataset, f.name, f.size, f.sha256, ("http://127.0.0.1:9/" + f.name,), f.md5)
                           for f in files) for name, files in data.FILES.items()}
    monkeypatch.setattr(data, "FILES", offline)
    start = time.perf_counter()
    code = main(["data", "download", "mnist", "--data-root", str(tmp_path), "--timeout", "2"])
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert code == 1
    assert "could not download mnist file train-images-idx3-ubyte.gz" in err and "Traceback" not in err
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in err
    assert not list((tmp_path / "mnist").glob("*.gz"))  # nothing half-downloaded left behind


def test_download_keeps_verified_files(data_root, tmp_path):
    shutil.copytree(data_root / "mnist", tmp_path / "mnist")
    lines = []
    paths = data.download("mnist", tmp_path, timeout=1, log=lines.append)
    assert len(paths) == 4 and all("already present and verified" in line for line in lines)


# -- the decoded cache --------------------------------------------------------------------------------

def _tiny_zip(path: Path) -> Path:
    from PIL import Image

    with zipfile.ZipFile(path, "w") as z:
        for i in range(3):
            im = Image.new("1", (105, 105), 1)
            im.paste(0, (10 * i, 10, 10 * i + 40, 60))
            buffer = io.BytesIO()
            im.save(buffer, format="PNG")
            z.writestr(f"images_background/Tiny/character01/0001_{i + 1:02d}.png", buffer.getvalue())
    return path


def test_cache_is_written_keyed_by_checksum_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    zip_path = _tiny_zip(tmp_path / "images_background.zip")
    images, names = data._cached_zip(zip_path, "ab" * 32)
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1 and "abababababababab" in cached[0].name
    assert images.shape == (3, 28, 28) and names.tolist()[0].endswith("0001_01.png")
    again, _ = data._cached_zip(zip_path, "ab" * 32)
    assert np.array_equal(images, again)
    cached[0].write_bytes(b"not a cache")
    rebuilt, _ = data._cached_zip(zip_path, "ab" * 32)
    assert np.array_equal(images, rebuilt)
