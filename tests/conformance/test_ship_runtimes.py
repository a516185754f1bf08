"""Real container runtimes on a shiftfs mount of a base-0 Debian image.

The image is `debootstrap --variant=minbase bookworm`, made once on the host
by scripts/prepare-ship.sh (`make ship-prepare`) into
CACHE/images/bookworm-minbase.tar; each test unpacks it to a tmpfs, leases a
range with `shiftctl range pick` (state dir in /run), mounts the image with
shiftfs `uidmap=0:BASE:65536` (files stored at N show as BASE+N) and runs:

- systemd-nspawn (bookworm's systemd 252) with --private-users=BASE:65536
  --private-users-ownership=off: no chown of the tree, no idmapped mount;
  shiftfs does the shifting;
- crun with an OCI config whose linux.uidMappings/gidMappings are
  {containerID 0, hostID BASE, size 65536}, root.path the shiftfs mount.

In the container: /etc/passwd is 0:0, a chown to 100:100 works, a local
package goes in through `apt-get install ./pkg.deb` (dpkg unpacks files owned
by 100:100, its postinst creates a dir owned by 103:104), `useradd -m` makes a
user and its home, and that user writes a file.  Afterwards the image on disk
holds base-0 ids only (every id < 65536), and those exact ids.

The guest has no systemd as pid 1, no dbus and no machined: nspawn runs with
--register=no --keep-unit; cgroup2 is mounted at /sys/fs/cgroup if it is not.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COUNT = 65536
STATE_DIR = "/run/shiftctl-ship"
SUITE = "bookworm"


def cache_dir() -> Path:
    """The harness cache: SHIFTFS_MODDIR is CACHE/kernels/K/root/lib/modules/R."""
    moddir = os.environ.get("SHIFTFS_MODDIR")
    if moddir and len(Path(moddir).parents) > 5:
        return Path(moddir).parents[5]
    env = os.environ.get("SHIFTFS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "shiftfs"


IMAGE = cache_dir() / "images" / f"{SUITE}-minbase.tar"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif("shiftfs" not in Path("/proc/filesystems").read_text(),
                       reason="shiftfs is not loaded"),
    pytest.mark.skipif(not IMAGE.is_file(),
                       reason=f"no base-0 image {IMAGE}: run `make ship-prepare` "
                       "(scripts/prepare-ship.sh) on the host first"),
]


def run(*cmd, check=True, timeout=600, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       **kw)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed "
                             f"({r.returncode}):\n{r.stdout[-4000:]}\n"
                             f"{r.stderr[-4000:]}")
    return r


def shiftctl(*args):
    r = run(sys.executable, "-m", "shiftctl", *args, "--state-dir", STATE_DIR,
            check=False, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    return r.stdout


# What both runtimes run in the container (as its root).  NAME keeps the two
# runs apart; every result is a KEY=VALUE line.
CONTAINER_SCRIPT = r"""
set -eu
NAME=$1
echo "ls=$(ls -ln /etc/passwd)"
echo "passwd=$(stat -c %u:%g /etc/passwd)"
echo "id=$(id -u):$(id -g)"
echo "uid_map=$(tr -s ' ' ' ' </proc/self/uid_map | sed 's/^ //')"
echo "gid_map=$(tr -s ' ' ' ' </proc/self/gid_map | sed 's/^ //')"

mkdir -p /srv/$NAME
echo data >/srv/$NAME/owned
chown 100:100 /srv/$NAME/owned
echo "owned=$(stat -c %u:%g /srv/$NAME/owned)"

# apt-get style: a local package; dpkg unpacks files owned by 100:100 and
# runs a postinst that chowns
pkg=/tmp/pkg-$NAME
mkdir -p $pkg/DEBIAN $pkg/opt/ship-$NAME
cat >$pkg/DEBIAN/control <<EOF
Package: ship-$NAME
Version: 1.0
Architecture: all
Maintainer: shiftfs <shiftfs@example.org>
Description: shiftfs ship test package
EOF
cat >$pkg/DEBIAN/postinst <<EOF
#!/bin/sh
set -e
install -d -o 103 -g 104 /var/lib/ship-$NAME
EOF
chmod 0755 $pkg/DEBIAN/postinst
echo payload >$pkg/opt/ship-$NAME/file
chown -R 100:100 $pkg/opt/ship-$NAME
dpkg-deb -b $pkg /tmp/ship-$NAME.deb >/dev/null
chmod 0644 /tmp/ship-$NAME.deb
apt-get install -y -q -o Dpkg::Use-Pty=0 /tmp/ship-$NAME.deb
echo "pkgdir=$(stat -c %u:%g /opt/ship-$NAME)"
echo "pkgfile=$(stat -c %u:%g /opt/ship-$NAME/file)"
echo "postinst=$(stat -c %u:%g /var/lib/ship-$NAME)"
echo "dpkg=$(dpkg-query -W -f '${Status}' ship-$NAME)"

useradd -m -s /bin/sh user-$NAME
echo "user=$(id -u user-$NAME):$(id -g user-$NAME)"
echo "home=$(stat -c %u:%g /home/user-$NAME)"
setpriv --reuid=user-$NAME --regid=user-$NAME --init-groups \
	sh -c "echo mine >/home/user-$NAME/mine"
echo "mine=$(stat -c %u:%g /home/user-$NAME/mine)"
echo "shadow=$(stat -c %u:%g /etc/shadow)"
grep -q "^user-$NAME:" /etc/shadow && echo "shadow_entry=yes"
echo done=yes
"""


def results(out: str) -> dict:
    return dict(line.split("=", 1) for line in out.splitlines()
                if re.match(r"^[a-z_]+=", line))


def disk_ids(root: Path):
    bad, ids = [], {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [""] + dirnames + filenames:
            p = os.path.join(dirpath, n) if n else dirpath
            st = os.lstat(p)
            ids[os.path.relpath(p, root)] = (st.st_uid, st.st_gid)
            if st.st_uid >= COUNT or st.st_gid >= COUNT:
                bad.append((p, st.st_uid, st.st_gid))
    return ids, bad


@pytest.fixture(scope="module", autouse=True)
def host_setup():
    """cgroup2 at /sys/fs/cgroup (nspawn and crun look there), /dev/fd."""
    mounted = []
    if not os.path.ismount("/sys/fs/cgroup"):
        run("mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup")
        mounted.append("/sys/fs/cgroup")
    if not os.path.exists("/dev/fd"):
        os.symlink("/proc/self/fd", "/dev/fd")
    yield
    for m in mounted:
        run("umount", "-l", m, check=False)


@pytest.fixture
def image(scratch):
    """The base-0 image unpacked on a tmpfs, a leased range, and the image
    mounted through shiftfs at that range: (lower, mnt, base)."""
    work = Path(tempfile.mkdtemp(prefix="ship-", dir=scratch))
    # crun resolves root.path as the container's root (host uid BASE): the
    # mount point must be reachable by it; the unshifted lower stays in a
    # root-only directory
    os.chmod(work, 0o755)
    (work / "private").mkdir(mode=0o700)
    lower, mnt = work / "private" / "img", work / "mnt"
    lower.mkdir()
    mnt.mkdir()
    run("tar", "-C", str(lower), "--numeric-owner", "-xpf", str(IMAGE))
    ids, bad = disk_ids(lower)
    assert not bad, f"the cached image is not base 0: {bad[:5]}"
    base, count = map(int, shiftctl("range", "pick", "--owner-pid",
                                    str(os.getpid())).split())
    assert count == COUNT and base >= 0x80000 and base % COUNT == 0
    try:
        run("mount", "-t", "shiftfs", "-o",
            f"shift_uids,shift_gids,uidmap=0:{base}:{COUNT},"
            f"gidmap=0:{base}:{COUNT}", str(lower), str(mnt))
        try:
            st = os.stat(mnt / "etc" / "passwd")
            assert (st.st_uid, st.st_gid) == (base, base)
            yield lower, mnt, base
        finally:
            run("umount", "-l", str(mnt), check=False)
    finally:
        shiftctl("range", "release", str(base))
        shutil.rmtree(work, ignore_errors=True)


def check_container(res: dict, base: int, lower: Path, name: str,
                    before: dict):
    assert res.get("done") == "yes", res
    assert res["passwd"] == "0:0"
    fields = res["ls"].split()
    assert fields[2:4] == ["0", "0"], res["ls"]
    assert res["id"] == "0:0"
    assert res["uid_map"].split() == ["0", str(base), str(COUNT)]
    assert res["gid_map"].split() == ["0", str(base), str(COUNT)]
    assert res["owned"] == "100:100"
    assert res["pkgfile"] == "100:100"
    assert res["postinst"] == "103:104"
    assert res["dpkg"] == "install ok installed"
    uid, gid = map(int, res["user"].split(":"))
    assert 1000 <= uid < 60000
    assert res["home"] == res["user"]
    assert res["mine"] == res["user"]
    assert res["shadow"] == "%d:%d" % before["etc/shadow"]
    assert res.get("shadow_entry") == "yes"

    # on disk: base 0, the exact ids the container set
    ids, bad = disk_ids(lower)
    assert not bad, f"ids outside 0-65535 on disk: {bad[:10]}"
    assert ids[f"srv/{name}/owned"] == (100, 100)
    assert ids[f"opt/ship-{name}/file"] == (100, 100)
    assert ids[f"var/lib/ship-{name}"] == (103, 104)
    assert ids[f"home/user-{name}"] == (uid, gid)
    assert ids[f"home/user-{name}/mine"] == (uid, gid)
    assert ids["etc/passwd"] == (0, 0)
    assert ids["etc/shadow"] == before["etc/shadow"]
    assert f"user-{name}:x:{uid}:{gid}:" in (lower / "etc/passwd").read_text()
    # apt-get hands its download dir to _apt (42 in the image, BASE+42 in
    # the container's view): stored as 42
    apt_user = [line.split(":")[2] for line in
                (lower / "etc/passwd").read_text().splitlines()
                if line.startswith("_apt:")]
    assert ids["var/cache/apt/archives/partial"] == (int(apt_user[0]), 0)
    # every other file that was there keeps its owner
    changed = {p: (before[p], ids[p]) for p in before
               if p in ids and ids[p] != before[p]
               and p != "var/cache/apt/archives/partial"}
    assert not changed, f"ownership changed on disk: {list(changed.items())[:10]}"


def test_nspawn_base0_image(image):
    lower, mnt, base = image
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("systemd-nspawn is not installed (systemd-container, "
                    "scripts/install-deps.sh)")
    before, _ = disk_ids(lower)
    r = run("systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
            "--pipe", "--directory", str(mnt),
            f"--private-users={base}:{COUNT}",
            "--private-users-ownership=off",
            "--link-journal=no", "--resolv-conf=off", "--timezone=off",
            "--setenv=DEBIAN_FRONTEND=noninteractive",
            "/bin/sh", "-c", CONTAINER_SCRIPT, "sh", "nspawn", check=False)
    res = results(r.stdout)
    assert r.returncode == 0 and res.get("done") == "yes", \
        f"nspawn failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    check_container(res, base, lower, "nspawn", before)
    # seen from the host through the mount: BASE+N
    st = os.stat(mnt / "srv" / "nspawn" / "owned")
    assert (st.st_uid, st.st_gid) == (base + 100, base + 100)


# Docker's default capability set: enough for chown, dpkg and useradd.
CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
        "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP",
        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE"]


def oci_config(rootfs: Path, base: int, args: list[str]) -> dict:
    mapping = [{"containerID": 0, "hostID": base, "size": COUNT}]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                    "/sbin:/bin", "HOME=/root", "TERM=dumb",
                    "DEBIAN_FRONTEND=noninteractive"],
            "cwd": "/",
            "capabilities": {k: CAPS for k in ("bounding", "effective",
                                               "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024,
                         "soft": 1024}],
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": "ship-crun",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                         "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777",
                         "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue",
             "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=755"]},
        ],
        "linux": {
            "uidMappings": mapping,
            "gidMappings": mapping,
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc",
                                                 "uts", "mount", "user")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list",
                            "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq",
                              "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def test_crun_base0_image(image, tmp_path):
    lower, mnt, base = image
    crun = shutil.which("crun")
    if crun is None:
        pytest.skip("crun is not installed (scripts/install-deps.sh)")
    before, _ = disk_ids(lower)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    cfg = oci_config(mnt, base, ["/bin/sh", "-c", CONTAINER_SCRIPT, "sh",
                                 "crun"])
    (bundle / "config.json").write_text(json.dumps(cfg, indent=1))
    name = f"ship-{os.getpid()}"
    r = run(crun, "--root", "/run/crun-ship", "--cgroup-manager=disabled",
            "run", "--bundle", str(bundle), name, check=False,
            stdin=subprocess.DEVNULL)
    run(crun, "--root", "/run/crun-ship", "delete", "-f", name, check=False)
    res = results(r.stdout)
    assert r.returncode == 0 and res.get("done") == "yes", \
        f"crun failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    check_container(res, base, lower, "crun", before)
    st = os.stat(mnt / "srv" / "crun" / "owned")
    assert (st.st_uid, st.st_gid) == (base + 100, base + 100)
