import os

import numpy as np
import pytest

from poseidon_cli.data.datum import datum_to_array, parse_datum
from poseidon_cli.data.lmdb_source import iter_records
from poseidon_cli.errors import DataError
from poseidon_cli.tools.convert_imageset import convert_imageset

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "root"
    (root / "sub dir").mkdir(parents=True)
    imgs = {}
    lines = []
    for i, name in enumerate(["a.png", "sub dir/b.png", "c.png"]):
        rgb = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / name)
        imgs[name] = rgb
        lines.append(f"{name} {i + 10}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, root, imgs


def test_bgr_pixels_labels_and_keys(images):
    d, root, imgs = images
    assert convert_imageset(root, d / "list.txt", d / "db") == 3
    recs = list(iter_records(str(d / "db")))
    assert [k for k, _ in recs] == [b"00000000_a.png", b"00000001_sub dir/b.png", b"00000002_c.png"]
    for (k, v), (name, rgb), label in zip(recs, imgs.items(), [10, 11, 12]):
        dt = parse_datum(v, k)
        assert dt.label == label and (dt.channels, dt.height, dt.width) == (3, 4, 5)
        np.testing.assert_array_equal(datum_to_array(dt), rgb[:, :, ::-1].transpose(2, 0, 1))


def test_gray_resize_and_shuffle(images):
    d, root, imgs = images
    convert_imageset(root, d / "list.txt", d / "db", resize_height=8, resize_width=10, gray=True,
                     shuffle=True, seed=1)
    recs = list(iter_records(str(d / "db")))
    names = [k.decode().split("_", 1)[1] for k, _ in recs]
    assert sorted(names) == sorted(imgs) and [k[:8] for k, _ in recs] == [b"%08d" % i for i in range(3)]
    for k, v in recs:
        name = k.decode().split("_", 1)[1]
        want = np.asarray(Image.fromarray(imgs[name]).convert("L").resize((10, 8), Image.BILINEAR))
        np.testing.assert_array_equal(datum_to_array(parse_datum(v)), want[None])


def test_encoded_keeps_the_file_bytes(images):
    d, root, imgs = images
    convert_imageset(root, d / "list.txt", d / "db", encoded=True)
    k, v = next(iter(iter_records(str(d / "db"))))
    dt = parse_datum(v)
    assert dt.encoded and dt.data == (root / "a.png").read_bytes()
    np.testing.assert_array_equal(datum_to_array(dt), imgs["a.png"][:, :, ::-1].transpose(2, 0, 1))


@pytest.mark.parametrize("line,match", [
    ("missing.png 1", "entry 1 'ROOT/missing.png': no such image file"),
    ("c.png notanint", "list.txt:2: expected '<image path> <integer label>'"),
])
def test_bad_entries_leave_no_output(images, line, match):
    d, root, _ = images
    (d / "list.txt").write_text(f"a.png 0\n{line}\n")
    with pytest.raises(DataError, match=match.replace("ROOT", str(root))):
        convert_imageset(root, d / "list.txt", d / "db")
    assert not any(p.startswith("db") for p in os.listdir(d))
