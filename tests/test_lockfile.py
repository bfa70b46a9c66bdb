"""The lock of a run's output: held while a run writes, taken over from a process that is gone."""
import os
import socket
import subprocess
import sys
import time

import pytest

from meanfield import MeanfieldError
from meanfield._lockfile import held, pid_alive


def _zombie():
    """A child that has exited but is not reaped yet (as a killed run whose job driver has not called wait())."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(500):
        with open(f"/proc/{child.pid}/stat", "rb") as f:
            stat = f.read()
        if stat[stat.rfind(b")") + 2:][:1] == b"Z":
            return child
        time.sleep(0.01)
    child.wait()
    pytest.skip("the child did not show as a zombie")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="zombies are told apart through /proc")
def test_the_lock_of_an_unreaped_killed_process_is_taken_over(tmp_path):
    # signal 0 reaches a zombie: a killed run's lock was refused until its parent reaped it
    child = _zombie()
    try:
        assert not pid_alive(child.pid)
        lock = tmp_path / ".r.h5.lock"
        lock.write_text(f"{socket.gethostname()} {child.pid}")
        with held(lock, "another run is writing"):
            assert lock.read_text().split()[1] == str(os.getpid())
    finally:
        child.wait()


def test_a_live_process_keeps_its_lock(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
        lock = tmp_path / ".r.h5.lock"
        lock.write_text(f"{socket.gethostname()} {child.pid}")
        with pytest.raises(MeanfieldError, match="another run is writing"):
            with held(lock, "another run is writing"):
                pass
    finally:
        child.kill()
        child.wait()
