"""ImageData: list parsing, BGR decode, resize, per-epoch shuffle, partitioning, errors."""
import collections

import numpy as np
import pytest

from poseidon_cli.blob import Blob
from poseidon_cli.errors import DataError
from poseidon_cli.layers.base import TEST, RunContext
from poseidon_cli.testing import make_layer

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def image_list(tmp_path):
    rng = np.random.default_rng(0)
    imgs = []
    lines = []
    for i in range(6):
        rgb = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / f"im{i}.png")
        imgs.append(rgb)
        lines.append(f"im{i}.png {i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, imgs


def layer_for(d, batch, extra="", transform="", ctx=RunContext(), phase=TEST, seed=1701):
    layer = make_layer(f'name: "img" type: "ImageData" image_data_param {{ source: "{d / "list.txt"}" '
                       f'root_folder: "{d}/" batch_size: {batch} {extra} }} '
                       f'transform_param {{ {transform} }}', phase, seed=seed)
    layer.context = ctx
    top = [Blob(()), Blob(())]
    layer.setup([], top)
    return layer, top


def test_reads_bgr_in_list_order_and_wraps(image_list):
    d, imgs = image_list
    layer, top = layer_for(d, 4)
    assert top[0].shape == (4, 3, 4, 6)
    layer.forward([], top)
    for i in range(4):
        np.testing.assert_array_equal(top[0].data[i], imgs[i][:, :, ::-1].transpose(2, 0, 1))
    layer.forward([], top)
    assert top[1].data.tolist() == [4, 5, 0, 1]
    layer.close()


def test_gray_resize_and_transform(image_list):
    d, imgs = image_list
    layer, top = layer_for(d, 1, "new_height: 8 new_width: 10 is_color: false",
                           "scale: 0.5 mean_value: 100")
    layer.forward([], top)
    want = np.asarray(Image.fromarray(imgs[0]).convert("L").resize((10, 8), Image.BILINEAR))
    np.testing.assert_allclose(top[0].data[0, 0], (want.astype(np.float32) - 100) * 0.5)
    layer.close()


def test_shuffle_is_seeded_and_every_epoch_is_a_permutation(image_list):
    d, _ = image_list
    seqs = []
    for _ in range(2):
        layer, top = layer_for(d, 6, "shuffle: true", seed=3)
        epochs = []
        for _ in range(3):
            layer.forward([], top)
            epochs.append(top[1].data.astype(int).tolist())
        layer.close()
        seqs.append(epochs)
    assert seqs[0] == seqs[1]                      # same seed, same order
    assert all(sorted(e) == list(range(6)) for e in seqs[0])
    assert len({tuple(e) for e in seqs[0]}) > 1    # reshuffled between epochs


@pytest.mark.parametrize("shared", [True, False])
def test_two_clients_split_the_lines(image_list, shared):
    d, _ = image_list
    if not shared:
        lines = (d / "list.txt").read_text().splitlines()
        (d / "list.txt_0").write_text("\n".join(lines[:3]) + "\n")
        (d / "list.txt_1").write_text("\n".join(lines[3:]) + "\n")
    seen = collections.Counter()
    for k in range(2):
        layer, top = layer_for(d, 3, f"shared_file_system: {str(shared).lower()}",
                               ctx=RunContext(k, 2))
        layer.forward([], top)
        seen.update(top[1].data.astype(int).tolist())
        layer.close()
    assert seen == collections.Counter(range(6))


def test_errors_name_the_file(image_list):
    d, _ = image_list
    with pytest.raises(DataError, match=r"list.txt_1' does not exist"):
        layer_for(d, 1, ctx=RunContext(1, 2))
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(d / "im2.png")
    layer, top = layer_for(d, 3)
    with pytest.raises(DataError, match="image 'im2.png' is 3x5x5, the first was 3x4x6"):
        layer.forward([], top)
    layer.close()
    (d / "list.txt").write_text("im0.png 0\nmissing.png 1\n")
    layer, top = layer_for(d, 2)
    with pytest.raises(DataError, match="missing.png': no such image file"):
        layer.forward([], top)
    layer.close()
