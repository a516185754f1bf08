"""The debug-kernel lane's pure parts: the config fragment, the cache key,
the kmemleak report, and where the lane plugs into the kernel matrix."""

import re
from pathlib import Path

import pytest

from shiftctl.errors import ShiftctlError
from shiftctl.vm import debugkernel, fetch, kernels, klog, kmemleak

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------ the fragment

def test_render_lines():
    text = debugkernel.render((("KASAN", "y"), ("DRM", "n"),
                               ("LOCKDEP_BITS", "17"),
                               ("LOCALVERSION", '"-x"')))
    assert text == ("CONFIG_KASAN=y\n# CONFIG_DRM is not set\n"
                    "CONFIG_LOCKDEP_BITS=17\nCONFIG_LOCALVERSION=\"-x\"\n")


def test_config_edit_arguments():
    assert debugkernel.config_edit("KASAN", "y") == ["--enable", "KASAN"]
    assert debugkernel.config_edit("DRM", "n") == ["--disable", "DRM"]
    assert debugkernel.config_edit("X", "m") == ["--module", "X"]
    assert debugkernel.config_edit("B", "17") == ["--set-val", "B", "17"]
    assert debugkernel.config_edit("LOCALVERSION", '"-shiftfs-debug"') == \
        ["--set-str", "LOCALVERSION", "-shiftfs-debug"]


def test_render_round_trips_through_parse_config():
    parsed = debugkernel.parse_config(debugkernel.render())
    assert parsed == dict(debugkernel.FRAGMENT)
    assert debugkernel.mismatches(debugkernel.render()) == []


def test_mismatches_name_what_did_not_stick():
    config = debugkernel.render().replace("CONFIG_KASAN_INLINE=y\n", "")
    config = config.replace("# CONFIG_DRM is not set", "CONFIG_DRM=y")
    config = config.replace("CONFIG_LOCKDEP_BITS=17", "CONFIG_LOCKDEP_BITS=15")
    assert debugkernel.mismatches(config) == [
        "CONFIG_DRM: wanted n, got y",
        "CONFIG_KASAN_INLINE: wanted y, got n",
        "CONFIG_LOCKDEP_BITS: wanted 17, got 15",
    ]


def test_fragment_has_the_debug_options_and_what_the_guest_needs():
    frag = dict(debugkernel.FRAGMENT)
    assert len(frag) == len(debugkernel.FRAGMENT), "a symbol set twice"
    for sym in ("KASAN", "KASAN_GENERIC", "KASAN_INLINE", "PROVE_LOCKING",
                "DEBUG_KMEMLEAK", "DEBUG_LIST", "VIRTIO_PCI",
                "VIRTIO_CONSOLE", "NET_9P_VIRTIO", "9P_FS", "OVERLAY_FS",
                "EXT4_FS", "XFS_FS", "BTRFS_FS", "TMPFS_XATTR", "FUSE_FS",
                "BLK_DEV_LOOP", "DM_FLAKEY", "CRYPTO_CRC32C", "USER_NS",
                "IO_URING", "MODULE_UNLOAD", "DEVTMPFS", "MAGIC_SYSRQ",
                "DEBUG_FS", "DEBUG_INFO_NONE"):
        assert frag[sym] == "y", sym
    assert int(frag["DEBUG_KMEMLEAK_MEM_POOL_SIZE"]) >= 16000
    # built in, not =m: the only module is the leak self-check's
    assert [s for s, v in frag.items() if v == "m"] == ["DEBUG_KMEMLEAK_TEST"]


def test_initramfs_modules_are_built_in():
    # every module /init insmods must be in the fragment as =y
    from shiftctl.vm import initramfs

    frag = dict(debugkernel.FRAGMENT)
    sym = {"virtio_pci": "VIRTIO_PCI", "virtio_console": "VIRTIO_CONSOLE",
           "9pnet_virtio": "NET_9P_VIRTIO", "9p": "9P_FS",
           "overlay": "OVERLAY_FS"}
    for mod in initramfs.INIT_MODULES:
        assert frag[sym[mod]] == "y", mod


# ------------------------------------------------------------- cache key

def test_cache_key_is_stable_and_versioned():
    a = debugkernel.cache_key("6.1.192-3", "CONFIG_KASAN=y\n", "gcc 12.2.0")
    assert a == debugkernel.cache_key("6.1.192-3", "CONFIG_KASAN=y\n",
                                      "gcc 12.2.0")
    assert re.fullmatch(r"6\.1\.192-3-[0-9a-f]{12}", a)


def test_cache_key_changes_with_each_input():
    base = ("6.1.192-3", "CONFIG_KASAN=y\n", "gcc 12.2.0")
    a = debugkernel.cache_key(*base)
    assert debugkernel.cache_key("6.1.193-1", *base[1:]) != a
    assert debugkernel.cache_key(base[0], "CONFIG_KASAN=n\n", base[2]) != a
    assert debugkernel.cache_key(*base[:2], "gcc 13.1.0") != a
    assert debugkernel.cache_key(*base, base="tinyconfig") != a
    # no ambiguity from concatenating the parts
    assert debugkernel.cache_key("v", "ab", "c") != \
        debugkernel.cache_key("v", "a", "bc")


def test_key_dir_and_load_use_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIFTFS_CACHE", str(tmp_path))
    monkeypatch.setattr(debugkernel.source, "version", lambda name: "6.1.9-1")
    monkeypatch.setattr(debugkernel, "_compiler", lambda: "gcc 12")
    d = debugkernel.key_dir("6.1-debug")
    assert d.parent == tmp_path / "debug-kernel"
    assert d.name.startswith("6.1.9-1-")
    assert debugkernel.load("6.1-debug") is None
    assert fetch.load("6.1-debug") is None      # dispatched, not apt
    # a complete record is reused as is (no build)
    rel = "6.1.9-shiftfs-debug"
    root = d / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{rel}").write_text("")
    (root / "lib" / "modules" / rel).mkdir(parents=True)
    (root / "lib" / "modules" / rel / "modules.dep").write_text("")
    (d / "build").mkdir()
    (d / "build" / "Module.symvers").write_text("")
    (root / "usr" / "src").mkdir(parents=True)
    (root / "usr" / "src" / f"linux-headers-{rel}").symlink_to("../../../build")
    (d / "resolved.json").write_text(
        '{"name": "6.1-debug", "release": "%s", "version": "x", '
        '"root": "%s"}' % (rel, root))
    k = debugkernel.build("6.1-debug")
    assert (k.release, k.vmlinuz.name) == (rel, f"vmlinuz-{rel}")
    assert (k.headers_dir / "Module.symvers").exists()
    assert fetch.fetch("6.1-debug") == k


# ------------------------------------------------------------ the matrix

def test_debug_kernel_is_not_in_the_default_matrix():
    assert "6.1-debug" in kernels.DEBUG_KERNELS
    assert "6.1-debug" not in kernels.KERNELS
    assert "6.1-debug" not in kernels.DEFAULT_KERNELS
    mk = (REPO / "Makefile").read_text()
    matrix = re.search(r"^MATRIX := (.*)$", mk, re.M).group(1).split()
    assert not any(kernels.is_debug(k) for k in matrix)


def test_debug_spec_builds_on_the_host():
    s = kernels.spec("6.1-debug")
    assert s.build_in is None and s.make_vars == ()
    assert kernels.guest_memory("6.1-debug") == "8G"
    assert kernels.guest_memory("6.1") == "4G"
    with pytest.raises(ShiftctlError, match="6.1-debug"):
        kernels.spec("6.1-nope")


# -------------------------------------------------------------- kmemleak

REPORT = """\
unreferenced object 0xffff888104a1c000 (size 64):
  comm "python3", pid 812, jiffies 4294903002 (age 21.340s)
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace:
    [<000000008e2b1c3a>] kmalloc_trace+0x26/0x90
    [<00000000a3b6d2e1>] shiftfs_fill_super+0x1a2/0x8c0 [shiftfs]
    [<0000000067f0b1aa>] vfs_get_super+0xd1/0x1e0
    [<00000000c2c8f3bb>] vfs_get_tree+0x8c/0x2f0
unreferenced object 0xffff888109f0e3c0 (size 32):
  comm "swapper/0", pid 1, jiffies 4294892345 (age 60.120s)
  hex dump (first 32 bytes):
    6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b a5  kkkkkkkkkkkkkkk.
  backtrace:
    [<000000001c9e3d4f>] __kmalloc+0x4b/0x140
    [<00000000d1b0aa57>] acpi_ns_internalize_name+0x5e/0xc0
"""


def test_parse_report():
    leaks = kmemleak.parse(REPORT)
    assert [(x.address, x.size, x.comm, x.pid) for x in leaks] == [
        ("0xffff888104a1c000", 64, "python3", 812),
        ("0xffff888109f0e3c0", 32, "swapper/0", 1)]
    assert leaks[0].backtrace[1] == \
        "shiftfs_fill_super+0x1a2/0x8c0 [shiftfs]"
    assert len(leaks[0].backtrace) == 4 and len(leaks[1].backtrace) == 2
    assert [x.involves_module for x in leaks] == [True, False]
    assert "shiftfs_fill_super+0x1a2/0x8c0 <- vfs_get_super" in \
        leaks[0].summary()


def test_findings_fail_on_every_leak():
    found = kmemleak.findings(REPORT.encode())
    assert [k for k, _ in found] == ["kmemleak (shiftfs)", "kmemleak"]
    assert "size 64" in found[0][1] and "python3" in found[0][1]


def test_findings_clean_missing_and_unavailable():
    assert kmemleak.findings(b"") == []
    assert kmemleak.parse("") == []
    missing = kmemleak.findings(None)
    assert missing and missing[0][0] == "kmemleak"
    off = kmemleak.findings(f"{kmemleak.UNAVAILABLE} no file\n".encode())
    assert off == [("kmemleak", "kmemleak could not scan: no file")]


def test_stage2_scans_only_when_asked():
    stage2 = (REPO / "scripts" / "guest-stage2.sh").read_text()
    assert 'if [ "$SHIFTFS_KMEMLEAK" = 1 ]' in stage2
    assert kmemleak.UNAVAILABLE in stage2
    assert f"/results/{kmemleak.RESULT}" in stage2
    # the scan runs before dmesg is captured and the results are sent
    assert stage2.index("echo scan") < stage2.index("dmesg >")


# ----------------------------------------------------- klog on debug splats

@pytest.mark.parametrize("line,kind", [
    ("BUG: KASAN: slab-use-after-free in shiftfs_d_revalidate+0x5/0x9",
     "KASAN"),
    ("WARNING: possible circular locking dependency detected", "lockdep"),
    ("WARNING: possible recursive locking detected", "lockdep"),
    ("WARNING: possible irq lock inversion dependency detected", "lockdep"),
    ("WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected",
     "lockdep"),
    ("WARNING: bad unlock balance detected!", "lockdep"),
    ("WARNING: held lock freed!", "lockdep"),
    ("DEBUG_LOCKS_WARN_ON(1)", "lockdep"),
    ("kmemleak: 3 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
     "kmemleak"),
    ("kmemleak: Memory pool empty, consider increasing "
     "CONFIG_DEBUG_KMEMLEAK_MEM_POOL_SIZE", "kmemleak"),
    ("kmemleak: Kernel memory leak detector disabled", "kmemleak"),
    ("list_add corruption. prev->next should be next (ffff), but was 0",
     "list"),
    ("list_add double add: new=ffff, prev=ffff, next=ffff.", "list"),
    ("list_del corruption, ffff->next is LIST_POISON1 (dead000000000100)",
     "list"),
])
def test_klog_catches_debug_reports(line, kind):
    assert [k for k, _ in klog.scan(f"[   12.345678] {line}")] == [kind]


def test_klog_ignores_debug_kernel_boot_lines():
    boot = """\
[    0.000000] kasan: KernelAddressSanitizer initialized
[    0.000000] Lock dependency validator: Copyright (c) 2006 Red Hat, Inc.
[    0.000000] ... MAX_LOCKDEP_SUBCLASSES:  8
[    0.000000] ... MAX_LOCK_DEPTH:          48
[    0.520000] kmemleak: Kernel memory leak detector initialized (mem pool available: 30797)
"""
    assert klog.scan(boot) == []


def test_a_new_build_drops_stale_builds_of_the_same_kernel(tmp_path):
    def made(key, name):
        d = tmp_path / key
        d.mkdir()
        (d / "resolved.json").write_text('{"name": "%s"}' % name)
        return d

    keep = made("6.1.193-1-aaaa", "6.1-debug")
    stale = made("6.1.192-3-bbbb", "6.1-debug")
    other = made("6.12.9-1-cccc", "6.12-debug")
    partial = tmp_path / "6.1.192-3-dddd"     # no record: left alone
    partial.mkdir()
    debugkernel._drop_stale("6.1-debug", keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [keep.name, other.name, partial.name])
    assert not stale.exists()


def test_debug_kernels_boot_with_4_level_paging():
    # KASAN + LA57 on 6.1 reports a false wild-memory-access at boot
    assert kernels.boot_params("6.1-debug") == "no5lvl"
    assert kernels.boot_params("6.1") == ""


def test_lane_suites_cover_the_whole_reliability_suite_once():
    from shiftctl.vm import cli

    labels = [cli.suite_label(s) for s in cli.DEBUG_SUITES]
    assert labels == ["conformance", "load", "reliability"]
    assert len(set(labels)) == len(labels)      # one set of reports each
    # the rest of tests/reliability boots once, without the load suite
    # (its own boot) and without the host-side crash test
    rest = cli.DEBUG_SUITES[2].split()
    assert rest[0] == "tests/reliability"
    assert set(rest[1:]) == {"--ignore=tests/reliability/host",
                             "--ignore=tests/reliability/test_load.py"}
    for suite in cli.DEBUG_SUITES:
        assert (REPO / suite.split()[0]).exists()
    assert cli.suite_label("tests/conformance/test_core.py") == "core"
    assert cli.suite_label("tests/conformance/") == "conformance"


def test_each_suite_keeps_its_own_reports(tmp_path, monkeypatch):
    """debug_cmd gives every suite's reports its label, and a report left
    by an older run is never taken for a suite that wrote none."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from shiftctl.vm import cli, report

    monkeypatch.setattr(cli, "build_dir", lambda: tmp_path)
    monkeypatch.setattr(debugkernel, "load", lambda name: object())
    monkeypatch.setattr(debugkernel, "build_seconds", lambda name: 60.0)
    monkeypatch.setattr(cli.fetch, "fetch",
                        lambda name: SimpleNamespace(release="r"))
    (tmp_path / "differential-6.1-debug.json").write_text("stale")
    seen = []

    def fake_test_kernel(name, args, timeout, python, suite, tag):
        seen.append(suite)
        (tmp_path / f"junit-{name}.xml").write_text(suite)
        if "--ignore" in suite:
            (tmp_path / f"reliability-{name}.json").write_text(suite)
        return report.Row(kernel=name, release="r", version="v",
                          counts=report.Counts(passed=1), status=0)

    monkeypatch.setattr(cli, "test_kernel", fake_test_kernel)
    res = CliRunner().invoke(cli.vm, ["debug", "--no-selfcheck"])
    assert res.exit_code == 0, res.output
    assert seen == list(cli.DEBUG_SUITES)
    got = sorted(f.name for f in tmp_path.iterdir()
                 if f.name != "vm-debug-report.txt")
    assert got == ["junit-6.1-debug-conformance.xml",
                   "junit-6.1-debug-load.xml",
                   "junit-6.1-debug-reliability.xml",
                   "reliability-6.1-debug-reliability.json"]
    assert (tmp_path / "junit-6.1-debug-load.xml").read_text() \
        == cli.DEBUG_SUITES[1]
