"""The reachability check of the lower directory (and of the mount point)."""

import os
import stat as st

import pytest

from shiftctl import mounting, mountinfo, mountopts, reach
from shiftctl.errors import EXIT_REFUSED, ShiftctlError


def fake_stat(table):
    def f(path):
        if path not in table:
            raise FileNotFoundError(2, "No such file or directory")
        uid, mode = table[path]
        return os.stat_result((st.S_IFDIR | mode, 0, 0, 2, uid, 0, 0, 0, 0, 0))
    return f


def test_components():
    assert reach.components("/a/b/c") == ["/", "/a", "/a/b", "/a/b/c"]
    assert reach.components("/") == ["/"]


@pytest.mark.parametrize("table,reachable,guard", [
    ({"/": (0, 0o755), "/srv": (0, 0o755), "/srv/img": (0, 0o755)}, True, None),
    ({"/": (0, 0o755), "/srv": (0, 0o700), "/srv/img": (0, 0o755)}, False, "/srv"),
    ({"/": (0, 0o755), "/srv": (0, 0o750), "/srv/img": (0, 0o755)}, True, None),   # g+x
    ({"/": (0, 0o755), "/srv": (0, 0o701), "/srv/img": (0, 0o755)}, True, None),   # o+x
    ({"/": (0, 0o755), "/srv": (0, 0o744), "/srv/img": (0, 0o755)}, False, "/srv"),  # r w/o x
    ({"/": (0, 0o755), "/srv": (1000, 0o700), "/srv/img": (0, 0o755)}, True, None),  # user-owned
    ({"/": (0, 0o755), "/srv": (0, 0o755), "/srv/img": (0, 0o700)}, False, "/srv/img"),
])
def test_check_path(table, reachable, guard):
    r = reach.check_path("/srv/img", fake_stat(table))
    assert r.reachable is reachable and r.guard == guard


def test_bind_mount_alias_is_checked():
    entries = mountinfo.parse(
        "1 0 8:1 / / rw - ext4 /dev/sda rw\n"
        "2 1 8:1 /srv/guard/img /pub/img rw - ext4 /dev/sda rw\n")
    assert reach.aliases("/srv/guard/img/sub", entries) == ["/pub/img/sub"]
    table = {"/": (0, 0o755), "/srv": (0, 0o755), "/srv/guard": (0, 0o700),
             "/srv/guard/img": (0, 0o755), "/srv/guard/img/sub": (0, 0o755),
             "/pub": (0, 0o755), "/pub/img": (0, 0o755), "/pub/img/sub": (0, 0o755)}
    bad = reach.check("/srv/guard/img/sub", entries, fake_stat(table))
    assert [b.path for b in bad] == ["/pub/img/sub"]


@pytest.fixture
def open_tmp():
    """A directory under /tmp that everyone can traverse (mkdtemp + 0755)."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="shiftctl-reach-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def test_real_dirs(open_tmp):
    guard = os.path.join(open_tmp, "guard")
    img = os.path.join(guard, "img")
    os.makedirs(img)
    os.chmod(guard, 0o755)
    if reach.check_path(open_tmp).guard is not None:
        pytest.skip("/tmp itself is shielded here")
    assert [r.path for r in reach.check(img, [])] == [img]
    if os.stat(guard).st_uid == 0:
        os.chmod(guard, 0o700)
        assert reach.check(img, []) == []
        # a symlink to it resolves to the shielded real path
        link = os.path.join(open_tmp, "link")
        os.symlink(img, link)
        assert reach.check(link, []) == []


def test_safety_check_lower_and_target(open_tmp, monkeypatch):
    monkeypatch.setattr(mounting, "_entries", lambda: [])
    if os.geteuid() != 0 or reach.check_path(open_tmp).guard is not None:
        pytest.skip("needs root and a reachable /tmp")
    guard = os.path.join(open_tmp, "guard")
    img = os.path.join(guard, "img")
    pub = os.path.join(open_tmp, "pub")
    mnt = os.path.join(pub, "mnt")
    os.makedirs(img)
    os.makedirs(mnt)
    os.chmod(guard, 0o700)
    fwd = mountopts.build([], ["0:131072:65536"], [], None)
    rev = mountopts.build([], ["131072:0:65536"], [], None)
    # forward map: the lower matters, the mount point does not
    mounting.safety_check(img, mnt, fwd)
    with pytest.raises(ShiftctlError) as e:
        mounting.safety_check(pub, img, fwd)
    assert e.value.exit_code == EXIT_REFUSED and "reachable" in str(e.value)
    assert "\n" not in str(e.value)
    # reverse map: disk 131072 shows as root, so the mount point matters too
    with pytest.raises(ShiftctlError, match="mount point"):
        mounting.safety_check(img, mnt, rev)
    mounting.safety_check(img, img, rev)
    # gids alike
    grev = mountopts.build([], [], ["5:0:1"], None)
    with pytest.raises(ShiftctlError, match="mount point"):
        mounting.safety_check(img, mnt, grev)
