"""meanfield._durable: the data is on disk before the rename, and the rename after it."""
import errno
import os

import pytest

from meanfield import _durable


def _record(monkeypatch, fail_dir_fsync=None, fail_file_fsync=None):
    calls, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        is_dir = os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None
        calls.append(("fsync", is_dir))
        err = fail_dir_fsync if is_dir else fail_file_fsync
        if err is not None:
            raise OSError(err, os.strerror(err))
        real_fsync(fd)

    def replace(a, b):
        calls.append(("replace", None))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="tells files from folders through /proc")
def test_file_synced_before_and_folder_after_the_rename(tmp_path, monkeypatch):
    calls = _record(monkeypatch)
    tmp, final = tmp_path / ".out.tmp", tmp_path / "out.h5"
    final.write_text("old")
    tmp.write_text("new")
    _durable.replace_durably(tmp, final)
    assert final.read_text() == "new" and not tmp.exists()
    assert calls == [("fsync", False), ("replace", None), ("fsync", True)]


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="tells files from folders through /proc")
def test_a_folder_that_refuses_fsync_is_not_an_error_but_a_file_is(tmp_path, monkeypatch):
    _record(monkeypatch, fail_dir_fsync=errno.EINVAL)
    tmp, final = tmp_path / ".a.tmp", tmp_path / "a"
    tmp.write_text("x")
    _durable.replace_durably(tmp, final)
    assert final.read_text() == "x"

    monkeypatch.undo()
    _record(monkeypatch, fail_file_fsync=errno.EIO)
    tmp.write_text("y")
    with pytest.raises(OSError):
        _durable.replace_durably(tmp, final)
    assert final.read_text() == "x"        # not renamed: the old file stands


def test_save_goes_through_it(tmp_path, monkeypatch):
    import meanfield as mf

    seen = []
    real = _durable.replace_durably
    monkeypatch.setattr("meanfield._io.replace_durably", lambda a, b: (seen.append(b), real(a, b)))
    traj = mf.simulate(mf.Model(1.0), mf.Particles.uniform(20, 3, seed=0), 0.1, backend="particles", step=0.05)
    mf.save(traj, tmp_path / "r.h5")
    assert seen == [tmp_path / "r.h5"] and mf.load(tmp_path / "r.h5").times.size == traj.times.size


def test_windows_rules_a_read_only_descriptor_cannot_be_synced_and_folders_cannot_be_opened(tmp_path, monkeypatch):
    # Windows' fsync (_commit) refuses a read-only descriptor (EBADF) and has no O_DIRECTORY
    import fcntl
    real = os.fsync

    def fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.delattr(os, "O_DIRECTORY")
    tmp, final = tmp_path / ".w.tmp", tmp_path / "w"
    tmp.write_text("data")
    _durable.replace_durably(tmp, final)
    assert final.read_text() == "data"


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="tells files from folders through /proc")
def test_a_folder_fsync_that_fails_for_real_is_an_error(tmp_path, monkeypatch):
    _record(monkeypatch, fail_dir_fsync=errno.EIO)
    tmp, final = tmp_path / ".b.tmp", tmp_path / "b"
    tmp.write_text("x")
    with pytest.raises(OSError, match="Input/output"):
        _durable.replace_durably(tmp, final)


def test_a_failed_sweep_record_leaves_no_temporary(tmp_path, monkeypatch):
    from meanfield._sweep import _runner

    def fail(a, b):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_runner, "replace_durably", fail)
    with pytest.raises(OSError, match="No space"):
        _runner._atomic_write(tmp_path / "k.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_a_result_the_disk_cannot_hold_is_refused_before_hdf5_writes(tmp_path, monkeypatch):
    # HDF5 on a full disk fails inside its writes and h5py then crashes the process while closing the file
    # (a segmentation fault, seen on a 200 kB tmpfs): the free space is checked first
    import shutil
    import warnings

    import meanfield as mf
    from meanfield import _io

    tr = mf.simulate(mf.Model(2.0), mf.Particles.uniform(500, seed=0), 0.2, backend="particles", step=0.05,
                     save_every=0.05)
    need = _io._payload_bytes(tr)
    assert need > 5 * 500 * 4 * 8                      # five states of positions and weights, at least
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=need // 2))
    with pytest.raises(OSError, match="No space left on device.*needs about"):
        mf.save(tr, tmp_path / "r.h5")
    assert list(tmp_path.iterdir()) == []              # no temporary left
    with warnings.catch_warnings(record=True) as caught:   # a periodic checkpoint: warned, the run goes on
        warnings.simplefilter("always")
        with pytest.raises(OSError, match="could not write the checkpoint"):
            mf.simulate(mf.Model(2.0), mf.Particles.uniform(500, seed=0), 0.2, backend="particles", step=0.05,
                        save_every=0.05, checkpoint=tmp_path / "c.h5")
    assert any("No space left" in str(w.message) for w in caught)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=need + (2 << 20)))
    mf.save(tr, tmp_path / "r.h5")                     # room enough: written
    assert mf.load(tmp_path / "r.h5").times[-1] == pytest.approx(0.2)
