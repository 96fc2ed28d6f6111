"""The shared LMDB environment registry survives a release that happens inside an acquire on the
same thread (what a garbage-collected Data layer's finalizer does when GC runs during lmdb.open)."""
import os
import threading

import lmdb

from poseidon_cli.data import lmdb_source


def test_release_from_inside_acquire_does_not_deadlock(tmp_path, monkeypatch):
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    for path in (old, new):
        with lmdb.open(path, map_size=1 << 20) as env, env.begin(write=True) as txn:
            txn.put(b"k", b"v")
    lmdb_source.acquire_env(old)
    real_open = lmdb_source.open_env

    def open_with_a_finalizer_inside(path, *args):
        lmdb_source.release_env(old)     # as a finalizer run by GC in the middle of opening
        return real_open(path, *args)

    monkeypatch.setattr(lmdb_source, "open_env", open_with_a_finalizer_inside)
    done = []
    t = threading.Thread(target=lambda: done.append(lmdb_source.acquire_env(new)), daemon=True)
    t.start()
    t.join(10)
    assert done, "acquire_env deadlocked on a release from the same thread"
    monkeypatch.setattr(lmdb_source, "open_env", real_open)
    assert os.path.realpath(old) not in lmdb_source._SHARED_ENVS
    assert lmdb_source._SHARED_ENVS[os.path.realpath(new)][1] == 1
    lmdb_source.release_env(new)
