"""Guest half of host/test_crash_recovery.py (run by the harness as root).

    crash_guest.py write DEV    mount DEV (ext4), shiftfs SHIFT_UP over it,
                                write a seeded tree as container users,
                                sync, print SYNCED, write more (unsynced),
                                then reset the machine at once (sysrq b)
    crash_guest.py verify DEV   mount DEV (journal replay), check every
                                synced byte and id on the lower and through
                                a new shiftfs mount; /results/crash.json
"""

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

BASE, RANGE = 0x20000, 0x10000
SHIFT_UP = (f"shift_uids,shift_gids,uidmap=0:{BASE:#x}:{RANGE:#x},"
            f"gidmap=0:{BASE:#x}:{RANGE:#x}")
MNT, VIEW = Path("/scratch/crash-dev"), Path("/scratch/crash-view")
SEED = 4242
# (relative path, container uid, gid, size)
USERS = [(0, 0), (1000, 1000), (33, 33), (65534, 65534), (0, 100)]


def tree():
    rng = random.Random(SEED)
    out = []
    for i in range(40):
        uid, gid = USERS[i % len(USERS)]
        d = f"d{i % 5}"
        out.append((f"{d}/f{i}", uid, gid, rng.choice([0, 1, 4095, 4096,
                                                       65537, 300000])))
    return out


def content(path, size):
    rng = random.Random(f"{SEED}:{path}")
    return rng.randbytes(size)


def sh(*cmd):
    subprocess.run(cmd, check=True)


def container_write(spec_json):
    """Runs as container root (nsexec): create and chown the tree."""
    for rel, uid, gid, size in json.loads(spec_json):
        p = VIEW / rel
        p.parent.mkdir(exist_ok=True)
        with open(p, "wb") as f:
            f.write(content(rel, size))
        os.chown(p, uid, gid)
    os.symlink("d0/f0", VIEW / "link")
    os.chown(VIEW / "link", 1000, 1000, follow_symlinks=False)


def write(dev):
    MNT.mkdir(parents=True, exist_ok=True)
    VIEW.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "ext4", dev, str(MNT))
    (MNT / "lower").mkdir()
    sh("mount", "-t", "shiftfs", "-o", SHIFT_UP, str(MNT / "lower"),
       str(VIEW))
    env = dict(os.environ, PYTHONPATH=str(Path.cwd() / "python"))
    # the container runs the system python: the venv may sit under a
    # directory it cannot search (/root)
    subprocess.run([sys.executable, "-m", "shiftctl.nsexec", "--map",
                    f"0:{BASE}:{RANGE}", "--", "/usr/bin/python3", __file__,
                    "container", json.dumps(tree())], check=True, env=env)
    os.sync()
    print("SYNCED", flush=True)
    # unsynced, as the container: may or may not survive, must not
    # corrupt the synced tree
    subprocess.run([sys.executable, "-m", "shiftctl.nsexec", "--map",
                    f"0:{BASE}:{RANGE}", "--", "/usr/bin/python3", __file__,
                    "late", "-"], check=True, env=env)
    Path("/proc/sysrq-trigger").write_text("b\n")


def verify(dev):
    MNT.mkdir(parents=True, exist_ok=True)
    VIEW.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "ext4", dev, str(MNT))
    bad, checked, nbytes = [], 0, 0
    lower = MNT / "lower"
    for rel, uid, gid, size in tree():
        p = lower / rel
        try:
            st = os.lstat(p)
            data = p.read_bytes()
        except OSError as e:
            bad.append(f"{rel}: {e}")
            continue
        checked += 1
        nbytes += len(data)
        if (st.st_uid, st.st_gid) != (uid, gid):
            bad.append(f"{rel}: lower ids {(st.st_uid, st.st_gid)} != "
                       f"{(uid, gid)}")
        if hashlib.sha256(data).digest() != \
                hashlib.sha256(content(rel, size)).digest():
            bad.append(f"{rel}: data differs ({len(data)} bytes, "
                       f"want {size})")
    st = os.lstat(lower / "link")
    if (st.st_uid, os.readlink(lower / "link")) != (1000, "d0/f0"):
        bad.append(f"link: {st.st_uid} {os.readlink(lower / 'link')}")
    sh("mount", "-t", "shiftfs", "-o", SHIFT_UP, str(lower), str(VIEW))
    for rel, uid, gid, size in tree():
        st = os.lstat(VIEW / rel)
        if (st.st_uid, st.st_gid) != (BASE + uid, BASE + gid):
            bad.append(f"{rel}: view ids {(st.st_uid, st.st_gid)}")
    sh("umount", str(VIEW))
    sh("umount", str(MNT))
    r = subprocess.run(["e2fsck", "-fn", dev], capture_output=True,
                       text=True)
    res = {"checked": checked, "bytes": nbytes, "bad": bad,
           "fsck_rc": r.returncode, "fsck": r.stdout[-2000:]}
    Path("/results").mkdir(exist_ok=True)
    Path("/results/crash.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("checked", "bytes", "fsck_rc")}))
    return 0 if not bad and r.returncode == 0 else 1


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "container":
        container_write(sys.argv[2])
    elif mode == "late":
        for i in range(20):
            (VIEW / f"late{i}").write_bytes(os.urandom(100000))
    elif mode == "write":
        write(sys.argv[2])
    else:
        sys.exit(verify(sys.argv[2]))
