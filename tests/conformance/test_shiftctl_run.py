"""shiftctl run in the guest: a base-0 busybox image shifted with shiftfs.

Checks the container's view (root, pid 1 init, loopback, /dev, /proc), the
ownership inside and on disk, exit statuses and the lease lifecycle.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from imagekit import BUSYBOX, make_image

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="no busybox"),
    pytest.mark.skipif("shiftfs" not in open("/proc/filesystems").read(),
                       reason="shiftfs is not loaded"),
]


def disk_ids(root):
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            out.add((st.st_uid, st.st_gid))
    return out


@pytest.fixture
def image(tmp_path):
    img = tmp_path / "img"
    make_image(str(img))
    return img


@pytest.fixture
def sc(tmp_path):
    env = dict(os.environ, SHIFTCTL_STATE_DIR=str(tmp_path / "state"))

    def run(*args, **kw):
        r = subprocess.run([sys.executable, "-m", "shiftctl", *args], env=env,
                           capture_output=True, text=True, timeout=120, **kw)
        assert "Traceback" not in r.stderr, r.stderr
        return r
    run.env = env
    return run


def leases(sc):
    return json.loads(sc("range", "list", "--json").stdout)


@pytest.fixture(params=["shiftfs", "idmapped"])
def backend(request):
    return request.param


def crun(sc, backend, image, script, *extra):
    r = sc("run", "--backend", backend, *extra, str(image), "--", "/bin/sh", "-c", script)
    if backend == "idmapped" and r.returncode == 125 and "cannot idmap" in r.stderr:
        pytest.skip(r.stderr.strip())
    return r


def test_container_view_and_disk_ids(sc, image, backend):
    r = crun(sc, backend, image,
             "id -u; id -g; echo $$; cat /proc/self/uid_map; cat /proc/self/gid_map; "
             "stat -c '%u:%g' / /etc/passwd /bin/busybox; "
             "ip link show lo | grep -q UP && echo lo-up; "
             "echo hi > /dev/null && test -c /dev/zero && test -d /dev/pts && echo dev-ok; "
             "touch /root/made && mkdir /root/dir && chown 1000:1000 /root/dir && "
             "echo data > /tmp/x && echo wrote; stat -c '%u:%g' /root/made")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0:3] == ["0", "0", "2"]
    base = int(out[3].split()[1])
    assert out[3].split() == ["0", str(base), "65536"] == out[4].split()
    assert out[5:8] == ["0:0", "0:0", "0:0"]       # the image is root's inside
    assert "lo-up" in out and "dev-ok" in out and "wrote" in out
    assert out[-1] == "0:0"
    # on disk: only base-0 ids, never the range
    ids = disk_ids(image)
    assert ids <= {(0, 0), (1000, 1000)}, ids
    assert (os.stat(image / "root" / "dir").st_uid, os.stat(image / "root" / "made").st_uid) \
        == (1000, 0)
    assert leases(sc) == []


def test_host_sees_range_ids_while_running(sc, image):
    """From the host, the container's root runs as the range's first id."""
    p = subprocess.Popen([sys.executable, "-m", "shiftctl", "run", str(image), "--",
                          "/bin/sleep", "60"], env=sc.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = _wait_lease(sc)["base"]
        uid = None
        for _ in range(100):
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read() != b"/bin/sleep\x0060\x00":
                            continue
                    with open(f"/proc/{pid}/status") as f:
                        uid = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
                except OSError:
                    continue
            if uid:
                break
            time.sleep(0.1)
        assert uid == [str(base)] * 4
    finally:
        p.kill()
        p.wait(30)


def test_exit_statuses(sc, image):
    assert crun(sc, "shiftfs", image, "exit 3").returncode == 3
    assert crun(sc, "shiftfs", image, "kill -SEGV $$").returncode == 128 + signal.SIGSEGV
    r = sc("run", str(image), "--", "/no/such/cmd")
    assert r.returncode == 127 and r.stderr.count("\n") == 1
    assert leases(sc) == []


def _wait_lease(sc):
    for _ in range(300):
        ls = leases(sc)
        if ls:
            return ls[0]
        time.sleep(0.1)
    raise AssertionError("no lease appeared")


def test_sigterm_and_lease_release(sc, image):
    p = subprocess.Popen([sys.executable, "-m", "shiftctl", "run", str(image), "--",
                          "/bin/sleep", "60"], env=sc.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lease = _wait_lease(sc)
    assert lease["owner_pid"] == p.pid and lease["live"]
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM
    assert leases(sc) == []


def test_killed_shiftctl_is_reclaimed(sc, image):
    p = subprocess.Popen([sys.executable, "-m", "shiftctl", "run", str(image), "--",
                          "/bin/sleep", "60"], env=sc.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lease = _wait_lease(sc)
    time.sleep(1.5)
    p.kill()
    p.wait(30)
    for _ in range(100):
        if not leases(sc)[0]["live"]:
            break
        time.sleep(0.1)
    assert leases(sc)[0]["live"] is False
    # the container died with it, so its range is free again
    for _ in range(100):
        r = sc("range", "pick", "--owner-pid", str(os.getpid()))
        if int(r.stdout.split()[0]) == lease["base"]:
            break
        sc("range", "release", *r.stdout.split())
        time.sleep(0.1)
    assert int(r.stdout.split()[0]) == lease["base"]


def test_two_containers_get_distinct_ranges(sc, image, tmp_path):
    img2 = tmp_path / "img2"
    make_image(str(img2))
    p = subprocess.Popen([sys.executable, "-m", "shiftctl", "run", str(image), "--",
                          "/bin/sleep", "30"], env=sc.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = _wait_lease(sc)
        r = crun(sc, "shiftfs", img2, "cat /proc/self/uid_map")
        assert r.returncode == 0
        assert int(r.stdout.split()[1]) != first["base"]
    finally:
        p.kill()
        p.wait(30)
