"""The idmapped backend's direction, checked on the host kernel.

shiftfs isn't on the host, but upstream idmapped mounts are: an extent
F:T:C must show disk id F+i as T+i there too, or the differential suite
compares two different things.  The mounts go on a temporary directory
and are removed.
"""

import errno
import os

import pytest

from shiftctl import mounting, mountinfo, mountopts
from shiftctl.errors import EXIT_UNSUPPORTED, ShiftctlError
from shiftctl.userns import make_userns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_make_userns_writes_maps_in_uid_map_order():
    from shiftctl.idmap import Extent
    fd = make_userns([Extent(0, 131072, 65536)], None)
    try:
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("user:[")
    finally:
        os.close(fd)


@pytest.fixture
def tree(tmp_path):
    low = tmp_path / "low"
    tgt = tmp_path / "tgt"
    low.mkdir()
    tgt.mkdir()
    for name, uid, gid in (("zero", 0, 0), ("k", 1000, 2000), ("big", 0x20000 + 100, 5)):
        p = low / name
        p.write_text(name)
        os.chown(p, uid, gid)
    yield low, tgt
    while mountinfo.top_mount_at(mountinfo.read(), str(tgt)) is not None:
        os.system(f"umount -l {tgt}")


def _as(uid, fn, cwd):
    """Run FN in CWD in a child with euid/egid UID; its exit status (0 = ok).
    (chdir first: the path to the test dir is closed to non-root uids.)"""
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(cwd)
            os.setgroups([])
            os.setegid(uid)
            os.seteuid(uid)
            fn()
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _mount(low, tgt, uidmaps, gidmaps):
    spec = mountopts.build([], uidmaps, gidmaps, None)
    try:
        mounting.mount(str(low), str(tgt), spec, backend="idmapped")
    except ShiftctlError as err:
        if err.exit_code == EXIT_UNSUPPORTED:
            pytest.skip(str(err))
        raise


def test_forward_base0_image(tree):
    low, tgt = tree
    _mount(low, tgt, ["0:131072:65536"], ["0:131072:65536"])
    st = os.stat(tgt / "zero")
    assert (st.st_uid, st.st_gid) == (131072, 131072)
    st = os.stat(tgt / "k")
    assert (st.st_uid, st.st_gid) == (131072 + 1000, 131072 + 2000)
    assert os.stat(tgt / "big").st_uid == 65534          # outside the map
    # host root's fsuid 0 has no disk id here: creating fails with EOVERFLOW
    with pytest.raises(OSError) as e:
        (tgt / "byroot").write_text("x")
    assert e.value.errno == errno.EOVERFLOW
    # the container's root (host 131072) creates disk-0 files
    assert _as(131072, lambda: open("new", "w").close(), tgt) == 0
    st = os.stat(low / "new")
    assert (st.st_uid, st.st_gid) == (0, 0)
    # chown through the mount: view ids go back to disk ids
    os.chown(tgt / "new", 131072 + 7, 131072 + 8)
    st = os.stat(low / "new")
    assert (st.st_uid, st.st_gid) == (7, 8)
    with pytest.raises(OSError) as e:
        os.chown(tgt / "new", 5, 5)                  # no disk id for 5
    assert e.value.errno == errno.EOVERFLOW


def test_reverse_shift(tree):
    low, tgt = tree
    _mount(low, tgt, ["0x20000:0:0x10000"], [])
    assert os.stat(tgt / "big").st_uid == 100
    assert os.stat(tgt / "zero").st_uid == 65534
    assert os.stat(tgt / "k").st_gid == 2000               # gids pass through
    os.chown(tgt / "big", 200, -1)
    assert os.stat(low / "big").st_uid == 0x20000 + 200


def test_umount_via_shiftctl(tree):
    low, tgt = tree
    _mount(low, tgt, ["0:131072:65536"], [])
    top = mountinfo.top_mount_at(mountinfo.read(), str(tgt))
    assert top is not None and top.idmapped
    mounting.umount(str(tgt))
    assert mountinfo.top_mount_at(mountinfo.read(), str(tgt)) is None
