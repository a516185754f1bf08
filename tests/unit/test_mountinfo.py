"""Parsing /proc/self/mountinfo and shiftfs' options in it."""

from shiftctl import mountinfo
from shiftctl.idmap import Extent

SAMPLE = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
30 22 0:25 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
61 22 0:52 / /mnt/a\\040b rw,relatime shared:30 - shiftfs /srv/images/base\\040img rw,shift_uids,shift_gids,uidmap=0:131072:65536,gidmap=0:131072:65536
62 22 0:53 / /mnt/c rw,relatime - shiftfs /srv/x rw,shift_uids,uidmap=0x20000:0:0x10000,uidmap=0:0x30000:10
63 22 0:54 / /mnt/d rw,relatime - shiftfs none rw,lowerdir=/srv/y,shift_uids,shift_gids,userns=/proc/77/ns/user
64 22 254:0 /srv/z /mnt/e rw,relatime,idmapped - ext4 /dev/vda rw
65 22 0:55 / /mnt/f rw - shiftfs /srv/w rw,shift_uids,shift_gids,uidmap=0:1:2;5:10:1,gidmap=0:1:2 5:10:1
"""


def test_parse_fields_and_escapes():
    es = mountinfo.parse(SAMPLE)
    assert len(es) == 7
    e = es[2]
    assert e.mount_id == 61 and e.parent_id == 22 and e.dev == "0:52"
    assert e.mount_point == "/mnt/a b"
    assert e.source == "/srv/images/base img"
    assert e.optional == ["shared:30"]
    assert e.fstype == "shiftfs"
    assert es[1].super_options == ["rw"]
    assert es[5].idmapped and not es[0].idmapped


def test_no_optional_fields_and_garbage():
    es = mountinfo.parse("1 2 3:4 / /x rw - tmpfs tmpfs rw\nnonsense\n\n")
    assert len(es) == 1 and es[0].optional == [] and es[0].mount_point == "/x"


def test_shift_mounts():
    ms = mountinfo.shift_mounts(mountinfo.parse(SAMPLE))
    assert [m.target for m in ms] == ["/mnt/a b", "/mnt/c", "/mnt/d", "/mnt/f"]
    a, c, d, f = ms
    assert a.lower == "/srv/images/base img"
    assert a.uidmap == [Extent(0, 131072, 65536)] and a.gidmap == a.uidmap
    assert a.shift_uids and a.shift_gids
    assert c.uidmap == [Extent(0x20000, 0, 0x10000), Extent(0, 0x30000, 10)]
    assert c.shift_uids and not c.shift_gids and c.gidmap == []
    assert d.lower == "/srv/y" and d.userns == "/proc/77/ns/user"
    assert f.uidmap == [Extent(0, 1, 2), Extent(5, 10, 1)] == f.gidmap


def test_include_idmapped_and_json():
    ms = mountinfo.shift_mounts(mountinfo.parse(SAMPLE), include_idmapped=True)
    idm = [m for m in ms if m.backend == "idmapped"]
    assert len(idm) == 1 and idm[0].target == "/mnt/e" and idm[0].lower == "/srv/z"
    j = ms[0].to_json()
    assert j["uidmap"] == [[0, 131072, 65536]] and j["backend"] == "shiftfs"


def test_top_mount_at():
    text = ("1 0 0:1 / / rw - ext4 a rw\n"
            "5 1 0:2 / /m rw - tmpfs t rw\n"
            "9 5 0:3 / /m rw - shiftfs /l rw,shift_uids,uidmap=0:1:1\n")
    top = mountinfo.top_mount_at(mountinfo.parse(text), "/m")
    assert top.mount_id == 9
    assert mountinfo.top_mount_at(mountinfo.parse(text), "/nope") is None


def test_read_real_mountinfo():
    es = mountinfo.read()
    assert any(e.mount_point == "/" for e in es)
