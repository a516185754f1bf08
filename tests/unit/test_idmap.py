"""Map parsing (both syntaxes), validation and the direction of the maps."""

import pytest

from shiftctl import idmap
from shiftctl.errors import EXIT_USAGE
from shiftctl.idmap import Extent, MapError


def test_plain_extent_decimal_and_hex():
    assert idmap.parse_extent("0:131072:65536") == Extent(0, 131072, 65536)
    assert idmap.parse_extent("0x20000:0:0x10000") == Extent(0x20000, 0, 0x10000)


@pytest.mark.parametrize("bad", ["", "1:2", "1:2:3:4", "a:1:1", "-1:0:1", "1:2:0",
                                 "0:0:4294967296", "4294967295:0:1",
                                 "4294967294:0:2", "0:4294967295:1", "1.5:0:1"])
def test_bad_extents(bad):
    with pytest.raises(MapError) as e:
        idmap.parse_extent(bad)
    assert e.value.exit_code == EXIT_USAGE


def test_last_valid_id():
    assert idmap.parse_extent("4294967294:0:1").first == 4294967294


def test_uidmap_option_accepts_util_linux_prefix():
    assert idmap.parse_uidmap_option("u:0:1000:10", "u") == [Extent(0, 1000, 10)]
    assert idmap.parse_uidmap_option("b:0:1000:10", "g") == [Extent(0, 1000, 10)]
    assert idmap.parse_uidmap_option("0:1:2,5:10:1", "u") == [Extent(0, 1, 2), Extent(5, 10, 1)]
    with pytest.raises(MapError, match="g: entry given to --uidmap"):
        idmap.parse_uidmap_option("g:0:1000:10", "u")


def test_xmount_idmap_form():
    u, g = idmap.parse_xmount_idmap("u:0:100000:65536 g:0:200000:65536 b:70000:5:1 9:9:1")
    assert u == [Extent(0, 100000, 65536), Extent(70000, 5, 1), Extent(9, 9, 1)]
    assert g == [Extent(0, 200000, 65536), Extent(70000, 5, 1), Extent(9, 9, 1)]
    # fstab escapes spaces as \040
    u, g = idmap.parse_xmount_idmap(r"u:0:1:1\040g:0:2:1")
    assert u == [Extent(0, 1, 1)] and g == [Extent(0, 2, 1)]
    with pytest.raises(MapError):
        idmap.parse_xmount_idmap("x:0:1:1")
    with pytest.raises(MapError):
        idmap.parse_xmount_idmap("  ")


def test_validate_overlaps_and_limit():
    idmap.validate([Extent(0, 100, 10), Extent(10, 110, 10)])
    with pytest.raises(MapError, match="overlap on disk"):
        idmap.validate([Extent(0, 100, 10), Extent(5, 200, 10)])
    with pytest.raises(MapError, match="overlap on mapped"):
        idmap.validate([Extent(0, 100, 10), Extent(50, 105, 10)])
    idmap.validate([Extent(i * 2, i * 2, 1) for i in range(340)])
    with pytest.raises(MapError, match="at most 340"):
        idmap.validate([Extent(i * 2, i * 2, 1) for i in range(341)])


def test_direction_shiftfs_semantics():
    # uidmap=0x20000:0:0x10000: files stored at 0x20000+100 show as 100
    m = [idmap.parse_extent("0x20000:0:0x10000")]
    assert idmap.to_view(m, 0x20000 + 100) == 100
    assert idmap.to_disk(m, 100) == 0x20000 + 100
    assert idmap.to_view(m, 5) is None
    # uidmap=0:0x20000:0x10000: a base-0 image shows at 0x20000+N
    m = [idmap.parse_extent("0:0x20000:0x10000")]
    assert idmap.to_view(m, 0) == 0x20000
    assert idmap.to_disk(m, 0x20000 + 7) == 7


def test_userns_lines_for_idmapped_mount():
    # An idmapped mount shows disk id k as make_kuid(mnt_userns, k): k read as
    # an id inside the namespace.  uid_map "A B C" maps ns A+i -> host B+i, so
    # the shiftfs extent F:T:C (disk F+i seen as T+i) is the line "F T C".
    assert idmap.userns_lines([Extent(0, 0x20000, 0x10000)]) == "0 131072 65536\n"
    assert idmap.userns_lines([Extent(0x20000, 0, 0x10000), Extent(5, 6, 1)]) == \
        "131072 0 65536\n5 6 1\n"


def test_proc_map_round_trip_and_identity():
    text = "         0     131072      65536\n     65536      5      1\n"
    exts = idmap.parse_proc_map(text)
    assert exts == [Extent(0, 131072, 65536), Extent(65536, 5, 1)]
    assert idmap.parse_proc_map(idmap.userns_lines(exts)) == exts
    assert idmap.is_identity(idmap.parse_proc_map("0 0 4294967295\n"))
    assert not idmap.is_identity(exts)


def test_format():
    assert idmap.format_map([Extent(0, 1, 2), Extent(3, 4, 5)]) == "0:1:2 3:4:5"
