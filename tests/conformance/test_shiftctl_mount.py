"""shiftctl mount / list / umount in the guest, both backends.

Runs as root in a harness guest with shiftfs loaded.  Every tree lives under
pytest's tmp_path, whose parent (/tmp/pytest-of-root) is root-only, so the
reachability check passes; the refusal tests build an open directory.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists("/proc/filesystems")
                       or "shiftfs" not in open("/proc/filesystems").read(),
                       reason="shiftfs is not loaded"),
]

BASE = 0x20000


def sc(*args, env=None, check=False):
    e = dict(os.environ, **(env or {}))
    r = subprocess.run([sys.executable, "-m", "shiftctl", *args], env=e,
                       capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, r.stderr
    return r


def mounted(path):
    return any(line.split()[4] == str(path) for line in open("/proc/self/mountinfo"))


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIFTCTL_STATE_DIR", str(tmp_path / "state"))
    low = tmp_path / "low"
    tgt = tmp_path / "tgt"
    low.mkdir()
    tgt.mkdir()
    for name, uid, gid in (("root", 0, 0), ("user", 1000, 1001),
                           ("shifted", BASE + 100, BASE + 101), ("far", 70000, 70000)):
        p = low / name
        p.write_text(name)
        os.chown(p, uid, gid)
    (low / "dir").mkdir()
    yield low, tgt
    for _ in range(4):
        if not mounted(tgt):
            break
        subprocess.run(["umount", "-l", str(tgt)])


def ids(p):
    st = os.lstat(p)
    return st.st_uid, st.st_gid


def test_mount_list_umount_forward(tree):
    low, tgt = tree
    sc("mount", "--uidmap", f"0:{BASE}:65536", "--gidmap", f"0:{BASE}:65536",
       str(low), str(tgt), check=True)
    assert ids(tgt / "root") == (BASE, BASE)
    assert ids(tgt / "user") == (BASE + 1000, BASE + 1001)
    assert ids(tgt / "far") == (65534, 65534)
    data = [m for m in json.loads(sc("list", "--json", check=True).stdout)
            if m["target"] == str(tgt)]
    assert len(data) == 1
    m = data[0]
    assert m["lower"] == str(low) and m["backend"] == "shiftfs"
    assert m["uidmap"] == [[0, BASE, 65536]] and m["gidmap"] == [[0, BASE, 65536]]
    text = sc("list", check=True).stdout
    assert f"{tgt}\t{low}\tuidmap=0:{BASE}:65536 gidmap=0:{BASE}:65536" in text
    sc("umount", str(tgt), check=True)
    assert not mounted(tgt)
    assert str(tgt) not in sc("list").stdout


def test_reverse_map(tree):
    low, tgt = tree
    sc("mount", "-o", f"shift_uids,uidmap={BASE:#x}:0:0x10000", str(low), str(tgt), check=True)
    assert ids(tgt / "shifted") == (100, BASE + 101)     # gids pass through
    assert ids(tgt / "root")[0] == 65534
    os.chown(tgt / "shifted", 200, -1)
    assert ids(low / "shifted")[0] == BASE + 200


def test_util_linux_syntax_is_the_same_mount(tree):
    low, tgt = tree
    sc("mount", "--idmap", f"u:0:{BASE}:65536 g:0:{BASE}:65536", str(low), str(tgt), check=True)
    a = ids(tgt / "user")
    sc("umount", str(tgt), check=True)
    sc("mount", "-o", f"X-mount.idmap=b:0:{BASE}:65536", str(low), str(tgt), check=True)
    assert ids(tgt / "user") == a == (BASE + 1000, BASE + 1001)


def test_userns_pid(tree):
    low, tgt = tree
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        from shiftctl import syscalls
        syscalls.unshare(syscalls.CLONE_NEWUSER)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        import time
        for _ in range(100):
            if os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user"):
                break
            time.sleep(0.01)
        for f in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{f}", "w") as fh:
                fh.write(f"0 {BASE} 65536\n")
        sc("mount", "--userns", str(pid), str(low), str(tgt), check=True)
        assert ids(tgt / "user") == (BASE + 1000, BASE + 1001)
    finally:
        os.close(w)
        os.waitpid(pid, 0)


def test_kernel_reason_in_error(tree):
    low, tgt = tree
    r = sc("mount", "-o", "no_such_option=1", "--uidmap", "0:1:1", str(low), str(tgt))
    assert r.returncode == 1
    assert "EINVAL" in r.stderr and "no_such_option" in r.stderr
    assert r.stderr.count("\n") == 1
    assert not mounted(tgt)


def test_missing_lower_reason(tree, tmp_path):
    _, tgt = tree
    r = sc("mount", "--uidmap", "0:1:1", str(tmp_path / "nope"), str(tgt))
    assert r.returncode == 1 and r.stderr.count("\n") == 1


@pytest.fixture
def open_dir():
    d = tempfile.mkdtemp(dir="/tmp")
    os.chmod(d, 0o755)
    os.mkdir(os.path.join(d, "low"))
    os.mkdir(os.path.join(d, "tgt"))
    yield d
    t = os.path.join(d, "tgt")
    while mounted(t):
        subprocess.run(["umount", "-l", t])
    shutil.rmtree(d)


def test_refuses_reachable_lower_unless_forced(open_dir):
    low, tgt = os.path.join(open_dir, "low"), os.path.join(open_dir, "tgt")
    r = sc("mount", "--uidmap", f"0:{BASE}:65536", low, tgt)
    assert r.returncode == 3 and "reachable" in r.stderr
    assert not mounted(tgt)
    sc("mount", "--force", "--uidmap", f"0:{BASE}:65536", low, tgt, check=True)
    assert mounted(tgt)


def test_pick_leases_and_umount_releases(tree):
    low, tgt = tree
    r = sc("mount", "--pick", "--owner-pid", str(os.getpid()), str(low), str(tgt), check=True)
    base, count = map(int, r.stdout.split())
    assert count == 65536 and base >= 0x80000 and base % 65536 == 0
    assert ids(tgt / "root") == (base, base)
    leases = json.loads(sc("range", "list", "--json").stdout)
    assert [(l["base"], l["mount"]) for l in leases] == [(base, str(tgt))]
    # the mounted map keeps the range busy even for another state dir
    other = sc("range", "pick", "--owner-pid", str(os.getpid()),
               env={"SHIFTCTL_STATE_DIR": str(low.parent / "state2")}, check=True)
    assert int(other.stdout.split()[0]) != base
    sc("umount", str(tgt), check=True)
    assert json.loads(sc("range", "list", "--json").stdout) == []


def _idmapped_or_skip(r):
    if r.returncode == 5:
        pytest.skip(f"idmapped mounts unsupported here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr


@pytest.fixture
def tmpfs_tree(tmp_path, monkeypatch):
    """The same tree twice on a fresh tmpfs (idmappable from 6.3 on)."""
    monkeypatch.setenv("SHIFTCTL_STATE_DIR", str(tmp_path / "state"))
    fs = tmp_path / "fs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(fs)], check=True)
    for n in ("a", "b", "ma", "mb"):
        (fs / n).mkdir()
    for lower in (fs / "a", fs / "b"):
        for name, uid, gid in (("root", 0, 0), ("user", 1000, 1001), ("far", 70000, 7)):
            p = lower / name
            p.write_text(name)
            os.chown(p, uid, gid)
    yield fs
    subprocess.run(["umount", "-R", "-l", str(fs)])


def test_idmapped_backend_matches_shiftfs(tmpfs_tree):
    fs = tmpfs_tree
    maps = ["--uidmap", f"0:{BASE}:65536", "--gidmap", f"0:{BASE}:65536"]
    _idmapped_or_skip(sc("mount", "--backend", "idmapped", *maps, str(fs / "a"), str(fs / "ma")))
    sc("mount", *maps, str(fs / "b"), str(fs / "mb"), check=True)
    for name in ("root", "user", "far"):
        assert ids(fs / "ma" / name) == ids(fs / "mb" / name), name
    # a chown through each lands on the same disk ids
    for m, low in (("ma", "a"), ("mb", "b")):
        os.chown(fs / m / "user", BASE + 5, BASE + 6)
        assert ids(fs / low / "user") == (5, 6)
    assert str(fs / "ma") in sc("list", "--all").stdout
    sc("umount", str(fs / "ma"), check=True)
    sc("umount", str(fs / "mb"), check=True)


def test_idmapped_unsupported_is_clear(tree):
    """On a lower that cannot be idmapped the error says so (exit 5)."""
    low, tgt = tree
    r = sc("mount", "--backend", "idmapped", "--uidmap", f"0:{BASE}:65536", str(low), str(tgt))
    if r.returncode == 0:
        sc("umount", str(tgt), check=True)
        pytest.skip("this lower can be idmapped on this kernel")
    assert r.returncode == 5 and "cannot idmap" in r.stderr


def test_backends_agree_on_each_lower_fs(lower, tmp_path, monkeypatch):
    """The same tree through both backends (conftest's `lower`: tmpfs, ext4,
    xfs, btrfs).  The scratch dir is world-traversable, hence --force."""
    monkeypatch.setenv("SHIFTCTL_STATE_DIR", str(tmp_path / "state"))
    for sub in ("a", "b"):
        d = lower / sub
        d.mkdir()
        for name, uid, gid in (("root", 0, 0), ("user", 1000, 1001), ("far", 70000, 7)):
            p = d / name
            p.write_text(name)
            os.chown(p, uid, gid)
    ma, mb = tmp_path / "ma", tmp_path / "mb"
    ma.mkdir()
    mb.mkdir()
    maps = ["--force", "--uidmap", f"0:{BASE}:65536", "--gidmap", f"0:{BASE}:65536"]
    try:
        sc("mount", *maps, str(lower / "b"), str(mb), check=True)
        _idmapped_or_skip(sc("mount", "--backend", "idmapped", *maps, str(lower / "a"), str(ma)))
        for name in ("root", "user", "far"):
            assert ids(ma / name) == ids(mb / name), name
        for m, low in ((ma, "a"), (mb, "b")):
            os.chown(m / "user", BASE + 5, BASE + 6)
            assert ids(lower / low / "user") == (5, 6)
    finally:
        for m in (ma, mb):
            while mounted(m):
                subprocess.run(["umount", "-l", str(m)])
