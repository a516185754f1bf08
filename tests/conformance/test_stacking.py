"""shiftfs stacking (issue 5): overlayfs on shiftfs (by host root and by
the root of a container's user namespace, a Docker-style three-layer
image), shiftfs over an overlayfs merged dir, shiftfs over shiftfs, and
the kernel's stacking depth limit.

Every test runs on tmpfs, ext4, xfs and btrfs lowers."""

import errno
import os
import shutil
import stat

import pytest

from conftest import (BASE, RANGE, SHIFT_DOWN, SHIFT_UP, FsContext,
                      as_process, container_map, errno_of, ids,
                      lower_ids_all, mount_shiftfs, run, sys_mount, umount)


def ovl_opts(lowers, upper, work, extra=""):
    o = f"lowerdir={':'.join(str(p) for p in lowers)}"
    if upper:
        o += f",upperdir={upper},workdir={work}"
    return o + ("," + extra if extra else "")


def mount_overlay(target, opts):
    r = run("mount", "-t", "overlay", "-o", opts, "overlay", str(target),
            check=False)
    if r.returncode:
        klog = run("dmesg", check=False).stdout.splitlines()[-5:]
        raise AssertionError(f"overlay -o {opts}: {r.stderr.strip()} "
                             f"{klog}")


def whiteout(path):
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def is_whiteout(path):
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_overlay_on_shiftfs_by_host_root(lower, mnt):
    """Layers stored at BASE+N, shifted down to N; overlayfs on top: a
    deleted lower file becomes a whiteout, a replaced directory becomes
    opaque, copy-up keeps the (shifted) owner."""
    for d in ("l", "u", "w", "m"):
        (lower / d).mkdir()
    (lower / "l/keep").write_text("keep\n")
    (lower / "l/gone").write_text("gone\n")
    (lower / "l/dir").mkdir()
    (lower / "l/dir/old").write_text("old\n")
    (lower / "l/owned").write_text("owned\n")
    for p, _, _ in lower_ids_all(lower):
        os.lchown(p, BASE, BASE)
    os.chown(lower / "l/owned", BASE + 1000, BASE + 1000)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    top = mnt / "m"
    mount_overlay(top, ovl_opts([mnt / "l"], mnt / "u", mnt / "w"))
    try:
        assert ids(top / "owned") == (1000, 1000)
        assert (top / "keep").read_text() == "keep\n"
        os.unlink(top / "gone")
        shutil.rmtree(top / "dir")
        os.mkdir(top / "dir")
        (top / "dir/new").write_text("new\n")
        with open(top / "owned", "a") as f:         # copy-up
            f.write("more\n")
        (top / "made").write_text("by root\n")
        assert sorted(os.listdir(top)) == ["dir", "keep", "made", "owned"]
        assert os.listdir(top / "dir") == ["new"]
        assert ids(top / "owned") == (1000, 1000)
    finally:
        umount(top)
    # on disk: whiteout, opaque dir, copied-up file owned by BASE+1000
    assert is_whiteout(lower / "u/gone")
    assert os.getxattr(lower / "u/dir", "trusted.overlay.opaque") == b"y"
    assert ids(lower / "u/owned") == (BASE + 1000, BASE + 1000)
    assert (lower / "u/owned").read_text() == "owned\nmore\n"
    assert ids(lower / "u/made") == (BASE, BASE)
    assert (lower / "l/gone").exists()          # lower layer untouched


def _docker_layers(lower):
    """Three image layers stored at base 0 (as an image store keeps them):
    l1 the base, l2 deletes etc/remove-me and makes opt/app opaque, l3
    adds a tool.  Plus upper/work and a mount point for the container."""
    L = lower
    for d in ("l1/etc", "l1/home/user", "l1/opt/app", "l2/etc", "l2/opt/app",
              "l3/bin", "upper", "work", "merged"):
        (L / d).mkdir(parents=True, exist_ok=True)
    (L / "l1/etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (L / "l1/etc/remove-me").write_text("old config\n")
    (L / "l1/home/user/.profile").write_text("# profile\n")
    os.chown(L / "l1/home/user", 1000, 1000)
    os.chown(L / "l1/home/user/.profile", 1000, 1000)
    (L / "l1/opt/app/v1.txt").write_text("v1\n")
    whiteout(L / "l2/etc/remove-me")
    os.setxattr(L / "l2/opt/app", "user.overlay.opaque", b"y")
    (L / "l2/opt/app/v2.txt").write_text("v2\n")
    (L / "l3/bin/tool").write_text("#!/bin/sh\necho tool\n")
    os.chmod(L / "l3/bin/tool", 0o755)
    for d in ("upper", "work", "merged"):
        os.chown(L / d, 0, 0)


def test_docker_image_on_shiftfs_in_a_container_userns(lower, mnt):
    """The container's root assembles a three-layer image with overlayfs
    (userxattr) on a shiftfs view of the base-0 layers: the merged tree
    shows the right files with the container's ids, the container's
    changes land in the upper layer at base 0, and the layers stay
    base 0."""
    e = errno_of(os.setxattr, lower, "user.probe", b"1")
    if e == errno.EOPNOTSUPP:
        pytest.skip("this kernel's lower has no user.* xattrs (overlayfs "
                    "in a user namespace needs user.overlay.*)")
    os.removexattr(lower, "user.probe")
    _docker_layers(lower)
    before = {p: (u, g) for p, u, g in lower_ids_all(lower)}
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def container_root():
        merged = mnt / "merged"
        opts = ovl_opts([mnt / "l3", mnt / "l2", mnt / "l1"], mnt / "upper",
                        mnt / "work", "userxattr")
        sys_mount("overlay", merged, "overlay", opts)
        try:
            out = {
                "etc": sorted(os.listdir(merged / "etc")),
                "app": sorted(os.listdir(merged / "opt/app")),
                "bin": sorted(os.listdir(merged / "bin")),
                "passwd": list(ids(merged / "etc/passwd")),
                "user": list(ids(merged / "home/user/.profile")),
                "tool": (merged / "bin/tool").read_text(),
            }
            # the container works on its image: copy-up, new files,
            # deletions, as root and as its user 1000
            with open(merged / "etc/passwd", "a") as f:
                f.write("app:x:1000:1000::/home/user:/bin/sh\n")
            (merged / "etc/new.conf").write_text("new\n")
            os.unlink(merged / "opt/app/v2.txt")
            pid = os.fork()
            if pid == 0:
                try:
                    os.setresgid(1000, 1000, 1000)
                    os.setresuid(1000, 1000, 1000)
                    with open(merged / "home/user/.profile", "a") as f:
                        f.write("export X=1\n")
                    (merged / "home/user/notes").write_text("mine\n")
                    os._exit(0)
                except BaseException:
                    os._exit(1)
            _, status = os.waitpid(pid, 0)
            out["user_rc"] = status
            out["after_user"] = list(ids(merged / "home/user/notes"))
            out["app_after"] = sorted(os.listdir(merged / "opt/app"))
            return out
        finally:
            umount(merged)

    res = as_process(container_root, userns=container_map(), newns=True)
    assert res["etc"] == ["passwd"]                 # remove-me whited out
    assert res["app"] == ["v2.txt"]                 # opaque: no v1.txt
    assert res["bin"] == ["tool"]
    assert res["passwd"] == [0, 0]
    assert res["user"] == [1000, 1000]
    assert res["tool"].startswith("#!/bin/sh")
    assert res["user_rc"] == 0
    assert res["after_user"] == [1000, 1000]
    assert res["app_after"] == []

    # the host sees the image shifted
    assert ids(mnt / "l1/etc/passwd") == (BASE, BASE)
    # the upper layer holds the container's changes at base 0
    up = lower / "upper"
    assert ids(up / "etc/passwd") == (0, 0)
    assert "app:x:1000" in (up / "etc/passwd").read_text()
    assert ids(up / "etc/new.conf") == (0, 0)
    assert ids(up / "home/user/.profile") == (1000, 1000)
    assert ids(up / "home/user/notes") == (1000, 1000)
    assert is_whiteout(up / "opt/app/v2.txt")
    # the image layers did not change, and nothing on disk left base 0
    for p, u, g in lower_ids_all(lower):
        if p.startswith(str(lower / "l")):
            assert before[p] == (u, g), p
        assert u < RANGE and g < RANGE, p
    assert (lower / "l1/etc/remove-me").read_text() == "old config\n"
    assert (lower / "l1/etc/passwd").read_text() == \
        "root:x:0:0::/root:/bin/sh\n"


def test_shiftfs_over_overlay_merged_dir(lower, mnt):
    """An overlayfs merged tree (base 0) shifted for a container."""
    for d in ("l", "u", "w", "m"):
        (lower / d).mkdir()
    (lower / "l/etc").mkdir()
    (lower / "l/etc/passwd").write_text("root\n")
    (lower / "l/home").mkdir()
    os.chown(lower / "l/home", 1000, 1000)
    merged = lower / "m"
    mount_overlay(merged, ovl_opts([lower / "l"], lower / "u", lower / "w"))
    try:
        mount_shiftfs(merged, mnt, SHIFT_UP)
        assert ids(mnt / "etc/passwd") == (BASE, BASE)
        assert ids(mnt / "home") == (BASE + 1000, BASE + 1000)

        def container():
            with open(mnt / "etc/passwd", "a") as f:
                f.write("more\n")
            (mnt / "home/mine").write_text("x")
            os.chown(mnt / "home/mine", 1000, 1000)
            return [list(ids(mnt / "etc/passwd")),
                    list(ids(mnt / "home/mine")),
                    (mnt / "etc/passwd").read_text()]

        res = as_process(container, userns=container_map())
        assert res == [[0, 0], [1000, 1000], "root\nmore\n"]
        umount(mnt)
    finally:
        umount(merged)
    assert ids(lower / "u/etc/passwd") == (0, 0)
    assert ids(lower / "u/home/mine") == (1000, 1000)
    assert (lower / "l/etc/passwd").read_text() == "root\n"


def test_shiftfs_over_shiftfs_composes_maps(lower, mnt):
    (lower / "f").write_text("x")
    os.chown(lower / "f", 5, 6)
    os.chmod(mnt, 0o755)        # the container walks into mnt/outer
    inner = mnt / "inner"
    outer = mnt / "outer"
    inner.mkdir()
    outer.mkdir()
    B2 = 0x40000
    try:
        mount_shiftfs(lower, inner, SHIFT_UP)           # disk N -> BASE+N
        mount_shiftfs(inner, outer,
                      f"shift_uids,shift_gids,uidmap={BASE:#x}:{B2:#x}:"
                      f"{RANGE:#x},gidmap={BASE:#x}:{B2:#x}:{RANGE:#x}")
        assert ids(inner / "f") == (BASE + 5, BASE + 6)
        assert ids(outer / "f") == (B2 + 5, B2 + 6)
        os.chown(outer / "f", B2 + 7, B2 + 8)
        assert ids(lower / "f") == (7, 8)

        def container():
            (outer / "new").write_text("x")
            return list(ids(outer / "new"))
        assert as_process(container, userns=container_map(B2)) == [0, 0]
        assert ids(lower / "new") == (0, 0)
        # host root (view 0) has no disk id through either map
        assert errno_of(lambda: (outer / "root").write_text("x")) == \
            errno.EOVERFLOW
        # a third layer exceeds the kernel's stacking depth
        third = mnt / "third"
        third.mkdir()
        ctx = FsContext()
        try:
            ctx.string("source", str(outer))
            assert errno_of(ctx.create) == errno.EINVAL
            msgs = " ".join(ctx.messages())
        finally:
            ctx.close()
        assert "stacking too deep" in msgs
        # and overlayfs refuses to go over the two of them
        (lower / "ovl-u").mkdir()
        r = run("mount", "-t", "overlay", "-o",
                f"lowerdir={outer}", "overlay", str(third), check=False)
        assert r.returncode != 0
    finally:
        umount(outer)
        umount(inner)
