import os

import pytest

from poseidon_cli.data.lmdb_source import (AtomicLMDBWriter, LMDBReader, count_records,
                                           iter_records, partition_source)
from poseidon_cli.errors import DataError
from poseidon_cli.layers.base import RunContext

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images


def write_db(path, n, value=lambda i: b"v%d" % i):
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"%04d" % i, value(i))
    env.close()
    return str(path)


@pytest.mark.parametrize("ctx,shared,path,start,stride", [
    (RunContext(), False, "/d/x", 0, 1),                     # single process: source itself
    (RunContext(0, 1, 1, 3), False, "/d/x", 1, 3),          # one client, 3 workers
    (RunContext(2, 4), False, "/d/x_2", 0, 1),              # partition per client
    (RunContext(2, 4, 1, 3), False, "/d/x_2", 1, 3),        # ... and stride inside it
    (RunContext(2, 4, 1, 3), True, "/d/x", 7, 12),          # shared: global rank / world
    (RunContext(0, 1), True, "/d/x", 0, 1),
])
def test_partition_rules(ctx, shared, path, start, stride):
    s = partition_source("/d/x", ctx, shared)
    assert (s.path, s.start, s.stride) == (path, start, stride)


def test_reader_key_order_wrap_and_stride(tmp_path):
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for k in [b"c", b"a", b"e", b"b", b"d"]:    # inserted out of order
            txn.put(k, k.upper())
    env.close()
    r = LMDBReader(str(tmp_path / "db"))
    assert r.count == 5
    assert [k for k, _ in r.next_records(7)] == [b"a", b"b", b"c", b"d", b"e", b"a", b"b"]
    assert r.epoch == 1
    r.close()
    r = LMDBReader(str(tmp_path / "db"), start=1, stride=2)
    assert [k for k, _ in r.next_records(6)] == [b"b", b"d", b"a", b"c", b"e", b"b"]
    r.close()
    # stride larger than the DB: keeps walking a wrapping cursor
    r = LMDBReader(str(tmp_path / "db"), start=4, stride=7)
    assert [k for k, _ in r.next_records(3)] == [b"e", b"b", b"d"]
    r.close()


def test_workers_cover_every_record_exactly_once(tmp_path):
    n, world = 23, 4
    write_db(tmp_path / "db", n)
    seen = []
    for rank in range(world):
        r = LMDBReader(str(tmp_path / "db"), start=rank, stride=world)
        take = len(range(rank, n, world))
        seen += [k for k, _ in r.next_records(take)]
        r.close()
    assert sorted(seen) == [b"%04d" % i for i in range(n)]


def test_missing_partition_error_names_path_rule_and_tool(tmp_path):
    spec = partition_source(str(tmp_path / "train_lmdb"), RunContext(3, 4), False)
    with pytest.raises(DataError) as e:
        LMDBReader(spec.path, spec.start, spec.stride, spec=spec, num_parts=4)
    msg = e.value.one_line()
    assert str(tmp_path / "train_lmdb_3") in msg
    assert "shared_file_system: false" in msg and "client 3 of 4" in msg
    assert "poseidon data partition" in msg and "--parts 4" in msg


def test_empty_and_not_lmdb_and_leveldb(tmp_path):
    write_db(tmp_path / "empty", 0)
    with pytest.raises(DataError, match="empty"):
        LMDBReader(str(tmp_path / "empty"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not an LMDB"):
        LMDBReader(str(tmp_path / "plain"))
    (tmp_path / "ldb").mkdir()
    (tmp_path / "ldb" / "CURRENT").write_text("MANIFEST-000001\n")
    with pytest.raises(DataError, match="LevelDB.*LMDB"):
        LMDBReader(str(tmp_path / "ldb"))


def test_atomic_writer_commit_abort_and_growth(tmp_path):
    out = tmp_path / "out"
    with AtomicLMDBWriter(out, txn_size=7, map_size=1 << 16) as w:   # tiny map: must grow
        for i in range(300):
            w.put(b"%05d" % i, bytes(1000))
    assert count_records(str(out)) == 300
    assert [k for k, _ in iter_records(str(out))][:2] == [b"00000", b"00001"]
    assert os.listdir(tmp_path) == ["out"]
    with pytest.raises(RuntimeError):
        with AtomicLMDBWriter(tmp_path / "bad") as w:
            w.put(b"x", b"y")
            raise RuntimeError("converter failed")
    assert os.listdir(tmp_path) == ["out"]       # nothing partial left
    with pytest.raises(DataError, match="already exists"):
        AtomicLMDBWriter(out)
