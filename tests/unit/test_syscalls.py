"""The cffi bindings: one-line errors with errno names and the kernel's reason.

These run on the host kernel (no shiftfs there): tmpfs stands in where a
filesystem context is needed; nothing is attached to the host's tree.
"""

import errno
import os

import pytest

from shiftctl import syscalls
from shiftctl.syscalls import SyscallError

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_numbers_for_this_arch():
    assert syscalls.NR["fsopen"] == 430 and syscalls.NR["mount_setattr"] == 442
    if os.uname().machine == "x86_64":
        assert syscalls.NR["finit_module"] == 313 and syscalls.NR["delete_module"] == 176


def test_struct_mount_attr_size():
    assert syscalls.ffi.sizeof("struct mount_attr") == 32


def test_unknown_fstype_is_enodev_one_line():
    with pytest.raises(SyscallError) as e:
        syscalls.fsopen("no-such-fs-xyz")
    assert e.value.errno in (errno.ENODEV, errno.EPERM)
    msg = str(e.value)
    assert "\n" not in msg and ("ENODEV" in msg or "EPERM" in msg)


@root
def test_fsconfig_error_carries_kernel_reason():
    fd = syscalls.fsopen("tmpfs")
    try:
        with pytest.raises(SyscallError) as e:
            syscalls.fsconfig(fd, syscalls.FSCONFIG_SET_STRING, "bogus_option", "1")
        assert e.value.errno == errno.EINVAL
        msg = str(e.value)
        assert msg.startswith("fsconfig bogus_option=1: EINVAL")
        assert "bogus_option" in e.value.reason          # "tmpfs: Unknown parameter ..."
        assert "\n" not in msg
    finally:
        os.close(fd)


@root
def test_detached_tmpfs_roundtrip():
    fd = syscalls.fsopen("tmpfs")
    try:
        syscalls.fsconfig(fd, syscalls.FSCONFIG_SET_STRING, "mode", "0700")
        syscalls.fsconfig(fd, syscalls.FSCONFIG_CMD_CREATE)
        mfd = syscalls.fsmount(fd, syscalls.FSMOUNT_CLOEXEC, syscalls.MOUNT_ATTR_NODEV)
    finally:
        os.close(fd)
    try:
        assert oct(os.fstat(mfd).st_mode & 0o7777) == "0o700"
        syscalls.mount_setattr(mfd, "", syscalls.AT_EMPTY_PATH,
                               attr_set=syscalls.MOUNT_ATTR_RDONLY)
    finally:
        os.close(mfd)


def test_umount_error_names_errno(tmp_path):
    with pytest.raises(SyscallError) as e:
        syscalls.umount2(str(tmp_path))
    assert e.value.errno in (errno.EINVAL, errno.EPERM)
    assert str(tmp_path) in str(e.value)


def test_delete_module_missing():
    with pytest.raises(SyscallError) as e:
        syscalls.delete_module("shiftctl_no_such_module")
    assert e.value.errno in (errno.ENOENT, errno.EPERM, errno.ENOSYS)  # ENOSYS: no modules


def test_pidfd_open_self():
    fd = syscalls.pidfd_open(os.getpid())
    os.close(fd)
    with pytest.raises(SyscallError, match="ESRCH|EINVAL"):
        syscalls.pidfd_open(2 ** 22 + 12345)
