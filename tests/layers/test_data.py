"""The Data layer: partitioning across workers, key order, wrap, transforms, errors."""
import collections

import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.blob import Blob
from poseidon_cli.errors import DataError
from poseidon_cli.layers.base import TEST, TRAIN, RunContext
from poseidon_cli.testing import make_layer
from poseidon_cli.tools.partition import partition_db

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images


def datum(c, h, w, pixels, label):
    d = caffe_pb2.Datum(channels=c, height=h, width=w, label=label)
    d.data = bytes(pixels)
    return d.SerializeToString()


def write_db(path, n, shape=(1, 2, 3)):
    """Record i: key %03d, all pixels i % 256, label i."""
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"%03d" % i, datum(*shape, [i % 256] * int(np.prod(shape)), i))
    env.close()
    return str(path)


def data_layer(source, batch, ctx=RunContext(), phase=TRAIN, extra="", transform="", xp=None):
    layer = make_layer(f'name: "d" type: "Data" data_param {{ source: "{source}" batch_size: {batch} '
                       f'backend: LMDB {extra} }} transform_param {{ {transform} }}', phase, xp=xp)
    layer.context = ctx
    return layer


def setup(layer, n_top=2, xp=np):
    top = [Blob((), xp=xp) for _ in range(n_top)]
    layer.setup([], top)
    return top


def labels_of(layer, top, steps):
    out = []
    for _ in range(steps):
        layer.forward([], top)
        out += backend.to_host(top[1].data).astype(int).tolist()
    return out


@pytest.mark.parametrize("shared", [False, True])
def test_cluster_of_3_clients_x_2_workers_reads_every_record_once(tmp_path, shared):
    n, clients, t = 36, 3, 2
    src = write_db(tmp_path / "train", n)
    if not shared:
        partition_db(src, clients)
    seen = collections.Counter()
    for k in range(clients):
        for w in range(t):
            layer = data_layer(src, 3, RunContext(k, clients, w, t),
                               extra=f"shared_file_system: {str(shared).lower()}")
            top = setup(layer)
            seen.update(labels_of(layer, top, 2))       # 6 records = one epoch for this worker
            layer.close()
    assert seen == collections.Counter(range(n))


def test_shared_file_system_deals_records_by_global_rank(tmp_path):
    src = write_db(tmp_path / "train", 20)
    layer = data_layer(src, 4, RunContext(1, 2, 1, 2), extra="shared_file_system: true")  # rank 3
    top = setup(layer)
    assert labels_of(layer, top, 2) == [3, 7, 11, 15, 19, 3, 7, 11]   # wraps to its first record
    layer.close()


def test_single_client_opens_source_itself_not_source_0(tmp_path):
    src = write_db(tmp_path / "train", 5)
    layer = data_layer(src, 4)
    top = setup(layer)
    assert top[0].shape == (4, 1, 2, 3) and top[1].shape == (4,)
    assert labels_of(layer, top, 2) == [0, 1, 2, 3, 4, 0, 1, 2]
    np.testing.assert_array_equal(top[0].data[:, 0, 0, 0], [4, 0, 1, 2])
    layer.close()
    write_db(tmp_path / "only_0", 3)
    import os
    os.rename(tmp_path / "only_0", tmp_path / "other_0")
    with pytest.raises(DataError, match=r"other' does not exist \(a single client reads"):
        setup(data_layer(str(tmp_path / "other"), 1))


def test_missing_partition_names_the_suffixed_path_and_the_tool(tmp_path):
    src = str(tmp_path / "train")
    with pytest.raises(DataError) as e:
        setup(data_layer(src, 2, RunContext(1, 2)))
    msg = e.value.one_line()
    assert msg.startswith("layer 'd' (type Data)")
    assert f"'{src}_1' does not exist" in msg and "poseidon data partition" in msg


def test_leveldb_backend(tmp_path):
    src = write_db(tmp_path / "lmdb_but_default_backend", 3)
    layer = make_layer(f'type: "Data" data_param {{ source: "{src}" batch_size: 2 }}')  # LEVELDB
    top = setup(layer)
    assert labels_of(layer, top, 1) == [0, 1]
    layer.close()
    ldb = tmp_path / "ldb"
    ldb.mkdir()
    (ldb / "CURRENT").write_text("MANIFEST-000002\n")
    with pytest.raises(DataError, match="LevelDB.*convert"):
        setup(make_layer(f'type: "Data" data_param {{ source: "{ldb}" batch_size: 2 backend: LEVELDB }}'))


def test_test_phase_cursor_continues_and_label_top_is_optional(tmp_path):
    src = write_db(tmp_path / "test", 7)
    layer = data_layer(src, 3, phase=TEST)
    top = setup(layer, n_top=1)
    firsts = []
    for _ in range(3):          # three "test passes" of one batch each
        layer.forward([], top)
        firsts.append(int(top[0].data[0, 0, 0, 0]))
    assert firsts == [0, 3, 6]
    layer.close()


def test_rand_skip_skips_fewer_than_rand_skip_records(tmp_path):
    src = write_db(tmp_path / "db", 50)
    starts = set()
    for seed in range(6):
        layer = make_layer(f'type: "Data" data_param {{ source: "{src}" batch_size: 3 backend: LMDB '
                           'rand_skip: 40 }', seed=seed)
        top = setup(layer)
        got = labels_of(layer, top, 1)
        assert got == [got[0], got[0] + 1, got[0] + 2] and 0 <= got[0] < 40
        starts.add(got[0])
        layer.close()
    assert len(starts) > 1


def test_transforms_in_the_layer_test_phase(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(2, 3, 6, 6), dtype=np.uint8)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i in range(2):
            txn.put(b"%d" % i, datum(3, 6, 6, imgs[i].tobytes(), i))
    env.close()
    layer = data_layer(tmp_path / "db", 2, phase=TEST,
                       transform="crop_size: 4 scale: 0.5 mean_value: 10 mean_value: 20 mean_value: 30")
    top = setup(layer)
    layer.forward([], top)
    mean = np.array([10, 20, 30], np.float32).reshape(3, 1, 1)
    want = (imgs[:, :, 1:5, 1:5].astype(np.float32) - mean) * 0.5
    np.testing.assert_allclose(top[0].data, want)
    layer.close()


def test_bad_records_name_their_key(tmp_path):
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"000", datum(1, 2, 2, [1, 2, 3, 4], 0))
        txn.put(b"001", datum(1, 2, 3, [0] * 6, 1))       # other shape
        txn.put(b"002", b"\xff\xff\xff garbage")           # not a Datum
    env.close()
    layer = data_layer(tmp_path / "db", 2)
    top = setup(layer)
    with pytest.raises(DataError, match="key '001'.*1x2x3 differs from the first record's 1x2x2"):
        layer.forward([], top)
    layer.close()
    env = lmdb.open(str(tmp_path / "db2"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"k1", b"\xff\xff\xff garbage")
    env.close()
    with pytest.raises(DataError, match="key 'k1': record is not a Caffe Datum"):
        setup(data_layer(tmp_path / "db2", 2))


def test_mean_file_mismatch_and_crop_too_large(tmp_path):
    src = write_db(tmp_path / "db", 2, shape=(1, 4, 4))
    mean = caffe_pb2.BlobProto(num=1, channels=3, height=4, width=4)
    mean.data.extend([0.0] * 48)
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
    with pytest.raises(DataError, match="layer 'd'.*mean_file.*3x4x4 but the data is 1x4x4"):
        setup(data_layer(src, 1, transform=f'mean_file: "{tmp_path / "mean.binaryproto"}"'))
    with pytest.raises(DataError, match="crop_size 5 is larger than the 4x4"):
        setup(data_layer(src, 1, transform="crop_size: 5"))


def test_encoded_png_records_decode_to_bgr(tmp_path):
    from PIL import Image
    import io
    rgb = np.random.default_rng(1).integers(0, 256, size=(3, 5, 3), dtype=np.uint8)  # H, W, RGB
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    d = caffe_pb2.Datum(label=4, encoded=True)
    d.data = buf.getvalue()
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"0", d.SerializeToString())
    env.close()
    layer = data_layer(tmp_path / "db", 1)
    top = setup(layer)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data[0], rgb[:, :, ::-1].transpose(2, 0, 1))
    assert top[1].data[0] == 4
    layer.close()


def _xps():
    out = [pytest.param(np, id="numpy")]
    if backend.gpu_available():
        out.append(pytest.param(backend.use_gpu(0), id="cupy", marks=pytest.mark.gpu))
        backend.use_cpu()
    return out


@pytest.mark.parametrize("xp", _xps())
def test_forward_fills_tops_on_the_layer_backend(tmp_path, xp):
    src = write_db(tmp_path / "db", 4)
    layer = data_layer(src, 2, xp=xp)
    top = setup(layer, xp=xp)
    layer.forward([], top)
    assert backend.get_array_module(top[0].data) is xp
    np.testing.assert_array_equal(backend.to_host(top[1].data), [0, 1])
    layer.close()


def test_large_images_random_crop_mirror_and_buffer_reuse(tmp_path):
    """Images >= 16 KB take the staging-buffer path; batches handed out must stay independent."""
    rng = np.random.default_rng(4)
    imgs = rng.integers(0, 256, size=(6, 3, 80, 80), dtype=np.uint8)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(6):
            txn.put(b"%d" % i, datum(3, 80, 80, imgs[i].tobytes(), i))
    env.close()
    layer = data_layer(tmp_path / "db", 3, transform="crop_size: 77 mirror: true scale: 0.5 "
                                                      "mean_value: 1 mean_value: 2 mean_value: 3")
    top = setup(layer)
    mean = np.array([1, 2, 3], np.float32).reshape(3, 1, 1)
    batches = []
    for _ in range(4):
        layer.forward([], top)
        batches.append((top[0].data.copy(), top[1].data.astype(int).copy()))
    mirrored = 0
    for data, labels in batches:
        for out, lab in zip(data, labels):
            full = (imgs[lab].astype(np.float32) - mean) * 0.5
            cands = {(y, x, m): (full[:, y:y + 77, x:x + 77][:, :, ::-1] if m else
                                 full[:, y:y + 77, x:x + 77])
                     for y in range(4) for x in range(4) for m in (0, 1)}
            hits = [k for k, v in cands.items() if np.array_equal(out, v)]
            assert hits, "output is not a (mirrored) crop of its record"
            mirrored += hits[0][2]
    assert [lab.tolist() for _, lab in batches] == [[0, 1, 2], [3, 4, 5], [0, 1, 2], [3, 4, 5]]
    assert 0 < mirrored < 12
    layer.close()
