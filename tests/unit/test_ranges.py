"""The id-range allocator: fake /proc and /etc, a temporary state dir."""

import multiprocessing
import os

import pytest

from shiftctl import ranges
from shiftctl.errors import EXIT_NO_RANGE, ShiftctlError
from shiftctl.ranges import ALIGN, RANGE_END, RANGE_START, Allocator

START = 4242


class FakeProc:
    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def proc(self, pid, start=START, state="S", uid_map=None, gid_map=None):
        d = os.path.join(self.root, str(pid))
        os.makedirs(d, exist_ok=True)
        fields = [state] + ["0"] * 18 + [str(start)] + ["0"] * 30
        with open(os.path.join(d, "stat"), "w") as f:
            f.write(f"{pid} (some (odd) name) " + " ".join(fields) + "\n")
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text if text is not None else "0 0 4294967295\n")

    def kill(self, pid):
        import shutil
        shutil.rmtree(os.path.join(self.root, str(pid)))

    def mountinfo(self, text):
        os.makedirs(os.path.join(self.root, "self"), exist_ok=True)
        with open(os.path.join(self.root, "self", "mountinfo"), "w") as f:
            f.write(text)


@pytest.fixture
def env(tmp_path):
    proc = FakeProc(str(tmp_path / "proc"))
    etc = tmp_path / "etc"
    etc.mkdir()
    proc.proc(100)                 # the owner used by the tests
    alloc = Allocator(state_dir=str(tmp_path / "state"), proc_root=proc.root,
                      etc_dir=str(etc))
    return alloc, proc, etc


def test_first_fit_basics():
    assert ranges.first_fit([], 65536) == RANGE_START
    assert ranges.first_fit([(0, RANGE_START + 1)], 65536) == RANGE_START + ALIGN
    assert ranges.first_fit([(RANGE_START, RANGE_END)], 1) is None
    assert ranges.first_fit([(RANGE_START + ALIGN, RANGE_START + 2 * ALIGN)], 2 * ALIGN) \
        == RANGE_START + 2 * ALIGN
    last = ranges.first_fit([(RANGE_START, RANGE_END - ALIGN)], ALIGN)
    assert last == RANGE_END - ALIGN and last + ALIGN <= 0x6FFF0000


def test_pick_prints_aligned_and_records_owner(env):
    alloc, proc, _ = env
    lease = alloc.pick(owner_pid=100, owner_name="web")
    assert (lease.base, lease.count) == (0x80000, 65536)
    assert lease.base % ALIGN == 0
    assert lease.owner_start == START and lease.owner_name == "web"
    assert os.path.exists(os.path.join(alloc.lease_dir, "524288-65536.lease"))
    assert alloc.pick(owner_pid=100).base == 0x90000


def test_avoids_subuid_subgid(env):
    alloc, proc, etc = env
    (etc / "subuid").write_text("alice:524288:65536\n# comment\nbad line\nbob:600000:10\n")
    (etc / "subgid").write_text("alice:720896:65536\n")
    # 0x80000 (alice), 0x90000 (bob: 600000 is inside 0x90000..), 0xa0000 ok
    assert alloc.pick(owner_pid=100).base == 0xA0000
    assert alloc.pick(owner_pid=100).base == 0xC0000   # 0xb0000 = 720896 is subgid


def test_avoids_live_userns_maps_not_identity_not_zombies(env):
    alloc, proc, _ = env
    proc.proc(200, uid_map="0 524288 65536\n", gid_map="0 524288 65536\n")
    proc.proc(201, uid_map="0 0 4294967295\n")
    proc.proc(202, uid_map="0 589824 65536\n", state="Z")     # a zombie
    proc.proc(203, uid_map="0 0 1\n1 655360 1\n")             # nested map, host side
    lease = alloc.pick(owner_pid=100)
    assert lease.base == 0x90000                    # zombie's range is free
    assert alloc.pick(owner_pid=100).base == 0xB0000  # 655360 = 0xa0000 taken


def test_avoids_shiftfs_mount_maps(env):
    alloc, proc, _ = env
    proc.mountinfo("61 22 0:52 / /mnt rw - shiftfs /img "
                   "rw,shift_uids,uidmap=0:524288:65536,uidmap=655360:0:1\n")
    assert alloc.pick(owner_pid=100).base == 0x90000
    assert alloc.pick(owner_pid=100).base == 0xB0000


def test_dead_owner_is_reclaimed(env):
    alloc, proc, _ = env
    proc.proc(300)
    a = alloc.pick(owner_pid=300)
    assert alloc.pick(owner_pid=100).base == a.base + ALIGN
    proc.kill(300)
    assert [live for _, live in alloc.listing()] == [False, True]
    c = alloc.pick(owner_pid=100)
    assert c.base == a.base                               # reclaimed
    assert len(alloc.leases()) == 2


def test_pid_reuse_does_not_keep_lease(env):
    alloc, proc, _ = env
    proc.proc(300, start=1)
    a = alloc.pick(owner_pid=300)
    proc.proc(300, start=2)        # same pid, another process
    assert alloc.pick(owner_pid=100).base == a.base


def test_flock_holder_keeps_lease(env):
    alloc, proc, _ = env
    proc.proc(300)
    a = alloc.pick(owner_pid=300)
    fd = alloc.hold(a)
    try:
        proc.kill(300)
        assert alloc.pick(owner_pid=100).base != a.base
    finally:
        os.close(fd)
    assert alloc.pick(owner_pid=100).base == a.base


def test_mount_keeps_lease(env):
    alloc, proc, _ = env
    proc.proc(300)
    a = alloc.pick(owner_pid=300, mount="/mnt/x")
    a.mount_id = 77
    alloc.update(a)
    proc.mountinfo("77 1 0:1 / /mnt/x rw - tmpfs t rw\n")
    proc.kill(300)
    assert alloc.pick(owner_pid=100).base != a.base
    proc.mountinfo("")
    assert alloc.pick(owner_pid=100).base == a.base


def test_owner_must_exist(env):
    alloc, _, _ = env
    with pytest.raises(ShiftctlError, match="owner process 999"):
        alloc.pick(owner_pid=999)


def test_release_and_errors(env):
    alloc, _, _ = env
    a = alloc.pick(owner_pid=100)
    with pytest.raises(ShiftctlError, match="no lease"):
        alloc.release(a.base, 5)
    alloc.release(a.base, a.count)
    assert alloc.leases() == []
    with pytest.raises(ShiftctlError, match="no lease"):
        alloc.release(a.base)


def test_size_and_exhaustion(env):
    alloc, _, etc = env
    b = alloc.pick(size=3 * ALIGN, owner_pid=100)
    assert b.count == 3 * ALIGN and alloc.pick(owner_pid=100).base == b.base + 3 * ALIGN
    (etc / "subuid").write_text(f"all:0:{RANGE_END}\n")
    with pytest.raises(ShiftctlError) as e:
        alloc.pick(owner_pid=100)
    assert e.value.exit_code == EXIT_NO_RANGE
    with pytest.raises(ShiftctlError):
        alloc.pick(size=0, owner_pid=100)


def test_claim(env):
    alloc, _, _ = env
    a = alloc.claim(0x100000, owner_pid=100)
    assert a.base == 0x100000
    with pytest.raises(ShiftctlError) as e:
        alloc.claim(0x100000 + 5, owner_pid=100)
    assert e.value.exit_code == EXIT_NO_RANGE
    with pytest.raises(ShiftctlError):
        alloc.claim(0x1000, owner_pid=100)           # below the window


def test_parse_range():
    assert ranges.parse_range("524288 65536") == (524288, 65536)
    assert ranges.parse_range("0x80000:0x10000") == (0x80000, 0x10000)
    assert ranges.parse_range("524288") == (524288, None)
    assert ranges.parse_range("524288", "65536") == (524288, 65536)
    with pytest.raises(ShiftctlError):
        ranges.parse_range("abc")


def test_state_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SHIFTCTL_STATE_DIR", str(tmp_path / "s"))
    assert Allocator().state_dir == str(tmp_path / "s")
    monkeypatch.delenv("SHIFTCTL_STATE_DIR")
    assert Allocator().state_dir == "/run/shiftctl"


def _worker(args):
    state, proc_root, etc = args
    alloc = Allocator(state_dir=state, proc_root=proc_root, etc_dir=etc)
    lease = alloc.pick(owner_pid=100)
    return lease.base


def test_50_concurrent_picks_are_distinct(env):
    alloc, proc, etc = env
    args = [(alloc.state_dir, proc.root, str(etc))] * 50
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(50) as pool:
        bases = pool.map(_worker, args, chunksize=1)
    assert len(set(bases)) == 50
    assert sorted(bases) == [RANGE_START + i * ALIGN for i in range(50)]
    assert len(alloc.leases()) == 50


def test_real_proc_scan_runs():
    alloc = Allocator(state_dir="/nonexistent-unused")
    alloc.userns_intervals()      # must not raise on the live /proc
    assert alloc.start_time(os.getpid()) is not None
