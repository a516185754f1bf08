"""A small base-0 busybox image for container tests (host and guest)."""

import os
import shutil

BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
APPLETS = ("sh", "ls", "id", "cat", "touch", "stat", "mkdir", "sleep", "kill",
           "hostname", "ip", "chown", "echo", "test", "grep", "true", "rm")


def make_image(root: str) -> None:
    """bin/ with busybox and its applets, passwd/group, every file 0:0."""
    for d in ("bin", "etc", "root", "proc", "dev", "sys", "tmp"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for a in APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", a))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\n")
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), 0, 0)
    os.chown(root, 0, 0)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
