"""Building the fsconfig calls and mount attributes from the command line."""

import pytest

from shiftctl import mountopts, syscalls
from shiftctl.idmap import Extent, MapError
from shiftctl.mountopts import FLAG, STRING


def test_maps_set_their_flags_in_order():
    spec = mountopts.build([], ["0:131072:65536"], ["0:131072:65536"], None)
    assert spec.fs_params("/img") == [
        (STRING, "source", "/img"),
        (FLAG, "shift_uids", None),
        (FLAG, "shift_gids", None),
        (STRING, "uidmap", "0:131072:65536"),
        (STRING, "gidmap", "0:131072:65536"),
    ]
    assert spec.attr_flags == 0


def test_uid_only():
    spec = mountopts.build([], ["0:1:2"], [], None)
    assert spec.shift_uids and not spec.shift_gids
    assert [k for _, k, _ in spec.fs_params("/x")] == ["source", "shift_uids", "uidmap"]


def test_o_options_hex_attrs_and_passthrough():
    spec = mountopts.build(["shift_uids,uidmap=0x20000:0:0x10000,ro,nosuid",
                            "nodev,noatime,foo=bar,baz"], [], [], None)
    assert spec.uidmap == [Extent(0x20000, 0, 0x10000)]
    assert spec.attr_flags == (syscalls.MOUNT_ATTR_RDONLY | syscalls.MOUNT_ATTR_NOSUID
                               | syscalls.MOUNT_ATTR_NODEV | syscalls.MOUNT_ATTR_NOATIME)
    assert spec.extra == [(STRING, "foo", "bar"), (FLAG, "baz", None)]
    assert spec.option_string() == "shift_uids,uidmap=131072:0:65536,foo=bar,baz"


def test_rw_cancels_ro():
    assert mountopts.build(["ro,rw"], [], [], None).attr_flags == 0


def test_repeated_extents_keep_order():
    spec = mountopts.build(["uidmap=0:100:10"], ["10:200:10", "u:20:300:10"], [], None)
    assert spec.uidmap == [Extent(0, 100, 10), Extent(10, 200, 10), Extent(20, 300, 10)]
    assert [v for _, k, v in spec.fs_params("/") if k == "uidmap"] == \
        ["0:100:10", "10:200:10", "20:300:10"]


def test_xmount_idmap_in_o_and_option():
    spec = mountopts.build(["X-mount.idmap=u:0:1000:10 g:0:2000:10"], [], [], None)
    assert spec.uidmap == [Extent(0, 1000, 10)] and spec.gidmap == [Extent(0, 2000, 10)]
    spec = mountopts.build([], [], [], None, ["b:0:1000:10"])
    assert spec.uidmap == spec.gidmap == [Extent(0, 1000, 10)]
    spec = mountopts.build(["X-mount.idmap=/proc/1/ns/user"], [], [], None)
    assert spec.userns == "/proc/1/ns/user" and spec.shift_uids and spec.shift_gids


def test_userns_pid_and_path():
    spec = mountopts.build([], [], [], "1234")
    assert spec.userns == "/proc/1234/ns/user"
    assert spec.shift_uids and spec.shift_gids
    assert spec.fs_params("/l")[-1] == (STRING, "userns", "/proc/1234/ns/user")
    spec = mountopts.build(["shift_uids"], [], [], "/run/ns")
    assert spec.userns == "/run/ns" and spec.shift_uids and not spec.shift_gids


def test_userns_conflicts():
    with pytest.raises(MapError):
        mountopts.build([], ["0:1:1"], [], "1")
    with pytest.raises(MapError):
        mountopts.build(["userns=/a"], [], [], "1")


def test_overlap_rejected():
    with pytest.raises(MapError):
        mountopts.build([], ["0:100:10", "5:300:10"], [], None)


def test_range_spec():
    spec = mountopts.range_spec(0x90000, 65536)
    assert spec.option_string() == \
        "shift_uids,shift_gids,uidmap=0:589824:65536,gidmap=0:589824:65536"
