import pytest

from poseidon_cli.data.lmdb_source import iter_records
from poseidon_cli.errors import DataError
from poseidon_cli.tools.partition import partition_db

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images


def write_db(path, n):
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"%05d" % i, b"value %d" % i)
    env.close()
    return str(path)


def test_round_robin_partitions_cover_every_record_once(tmp_path):
    src = write_db(tmp_path / "db", 11)
    res = partition_db(src, 3)
    assert [(p.rsplit("/", 1)[1], n) for p, n in res] == [("db_0", 4), ("db_1", 4), ("db_2", 3)]
    allrecs = []
    for k, (path, _) in enumerate(res):
        recs = list(iter_records(path))
        assert [key for key, _ in recs] == [b"%05d" % i for i in range(k, 11, 3)]
        allrecs += recs
    assert sorted(allrecs) == list(iter_records(src))


def test_existing_outputs_refused_before_writing(tmp_path):
    src = write_db(tmp_path / "db", 4)
    write_db(tmp_path / "db_1", 1)
    with pytest.raises(DataError, match="db_1' already exists"):
        partition_db(src, 2)
    assert not (tmp_path / "db_0").exists()


def test_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        partition_db(tmp_path / "nope", 2)
    write_db(tmp_path / "empty", 0)
    with pytest.raises(DataError, match="empty"):
        partition_db(tmp_path / "empty", 2)
