"""`shiftctl run` on the host kernel with --backend idmapped.

The host has no shiftfs, but the namespace dance, pivot_root, /dev, the
exit statuses and the lease lifecycle are the same for both backends.  All
mounts live in the container's private mount namespace.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from imagekit import BUSYBOX, make_image

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="no busybox"),
]

@pytest.fixture
def image(tmp_path):
    img = tmp_path / "img"
    make_image(str(img))
    return img


@pytest.fixture
def sc(tmp_path):
    env = dict(os.environ, SHIFTCTL_STATE_DIR=str(tmp_path / "state"))

    def run(*args, **kw):
        return subprocess.run([sys.executable, "-m", "shiftctl", *args], env=env,
                              capture_output=True, text=True, timeout=60, **kw)
    run.env = env
    return run


def leases(sc):
    return json.loads(sc("range", "list", "--json").stdout)


def _run(sc, image, script, *extra):
    r = sc("run", "--backend", "idmapped", *extra, str(image), "--", "/bin/sh", "-c", script)
    if r.returncode == 125 and "cannot idmap" in r.stderr:
        pytest.skip(r.stderr.strip())
    return r


def test_container_basics(sc, image):
    r = _run(sc, image, "id -u; id -g; echo $$; hostname; cat /proc/self/uid_map; "
                        "ip link show lo; stat -c '%u:%g' /etc/passwd; "
                        "touch /root/made; mkdir /root/dir; chown 5:6 /root/dir; "
                        "test -c /dev/null && echo > /dev/null && echo devnull-ok; "
                        "ls /dev/pts/ptmx /dev/shm /tmp /sys/kernel >/dev/null && echo mounts-ok")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "0" and out[1] == "0"
    assert out[2] == "2"                          # pid 1 is shiftctl's init
    assert out[3] == "shiftctl"
    base = int(out[4].split()[1])
    assert out[4].split() == ["0", str(base), "65536"] and base >= 0x80000
    assert "UP" in out[5] or "LOOPBACK,UP" in out[5]
    assert out[7] == "0:0"
    assert "devnull-ok" in out and "mounts-ok" in out
    # on disk: base-0 ids only
    st = os.stat(image / "root" / "made")
    assert (st.st_uid, st.st_gid) == (0, 0)
    st = os.stat(image / "root" / "dir")
    assert (st.st_uid, st.st_gid) == (5, 6)
    assert leases(sc) == []                       # released


def test_exit_status_and_signals(sc, image):
    assert _run(sc, image, "exit 7").returncode == 7
    assert _run(sc, image, "kill -SEGV $$").returncode == 128 + signal.SIGSEGV
    r = sc("run", "--backend", "idmapped", str(image), "--", "/nonexistent")
    assert r.returncode == 127 and "not found" in r.stderr
    r = sc("run", "--backend", "idmapped", str(image), "--", "/etc/passwd")
    assert r.returncode == 126
    assert leases(sc) == []


def test_sigterm_reaches_cmd_and_lease_released(sc, image):
    p = subprocess.Popen([sys.executable, "-m", "shiftctl", "run", "--backend", "idmapped",
                          str(image), "--", "/bin/sleep", "30"], env=sc.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(100):
        if leases(sc) and _container_up(leases(sc)[0]["base"]):
            break
        time.sleep(0.1)
    assert leases(sc)[0]["owner_pid"] == p.pid
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 128 + signal.SIGTERM
    assert leases(sc) == []


def _container_up(base):
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/uid_map") as f:
                if f.read().split()[1:2] == [str(base)]:
                    with open(f"/proc/{pid}/stat") as st:
                        if st.read().rsplit(")", 1)[1].split()[0] == "Z":
                            continue
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        if b"sleep" in c.read():
                            return True
        except (OSError, IndexError):
            continue
    return False


def test_killed_shiftctl_lease_reclaimed(sc, image):
    p = subprocess.Popen([sys.executable, "-m", "shiftctl", "run", "--backend", "idmapped",
                          str(image), "--", "/bin/sleep", "30"], env=sc.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(100):
        if leases(sc) and _container_up(leases(sc)[0]["base"]):
            break
        time.sleep(0.1)
    base = leases(sc)[0]["base"]
    p.kill()
    p.wait(10)
    for _ in range(50):                           # the container dies with it
        if not _container_up(base):
            break
        time.sleep(0.1)
    assert not _container_up(base)
    assert leases(sc)[0]["live"] is False
    r = sc("range", "pick", "--owner-pid", str(os.getpid()))
    assert r.stdout.split()[0] == str(base)       # reclaimed


def test_range_option(sc, image):
    r = _run(sc, image, "cat /proc/self/uid_map", "--range", "0x100000")
    assert r.returncode == 0 and r.stdout.split() == ["0", str(0x100000), "65536"]
    held = sc("range", "pick", "--owner-pid", str(os.getpid()))
    b = held.stdout.split()[0]
    r = _run(sc, image, "true", "--range", b)
    assert r.returncode == 125 and "in use" in r.stderr


def test_image_reachability_refused(sc, tmp_path):
    import tempfile
    d = tempfile.mkdtemp(dir="/tmp")
    try:
        os.chmod(d, 0o755)
        make_image(os.path.join(d, "img"))
        r = sc("run", "--backend", "idmapped", os.path.join(d, "img"), "--", "/bin/true")
        assert r.returncode == 125 and "reachable" in r.stderr
        assert "Traceback" not in r.stderr
        assert leases(sc) == []
    finally:
        shutil.rmtree(d)
