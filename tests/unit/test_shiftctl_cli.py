"""The shiftctl subcommands through click's CliRunner (no shiftfs needed)."""

import json
import os

import pytest
from click.testing import CliRunner

from shiftctl.cli import cli

from test_ranges import START, FakeProc


@pytest.fixture
def run(tmp_path, monkeypatch):
    proc = FakeProc(str(tmp_path / "proc"))
    proc.proc(100)
    (tmp_path / "etc").mkdir()
    monkeypatch.setenv("SHIFTCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SHIFTCTL_PROC_ROOT", proc.root)
    monkeypatch.setenv("SHIFTCTL_ETC_DIR", str(tmp_path / "etc"))

    def invoke(*args, **kw):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)
    invoke.proc = proc
    invoke.tmp = tmp_path
    return invoke


def one_line_error(result):
    err = result.stderr
    assert err.startswith("shiftctl: ") and err.count("\n") == 1, err
    assert "Traceback" not in result.output
    return err


def test_range_pick_prints_base_count_only(run):
    r = run("range", "pick", "--owner-pid", "100")
    assert r.exit_code == 0 and r.stdout == "524288 65536\n" and r.stderr == ""
    r = run("range", "pick", "--owner-pid", "100", "--size", "131072", "--owner", "db")
    assert r.stdout == "589824 131072\n"


def test_range_list_and_release(run):
    run("range", "pick", "--owner-pid", "100", "--owner", "web")
    run("range", "pick", "--owner-pid", "100")
    r = run("range", "list")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("524288 65536\tpid=100\tlive\tweb")
    data = json.loads(run("range", "list", "--json").stdout)
    assert data[0]["owner_start"] == START and data[0]["live"] is True
    assert run("range", "release", "524288", "65536").exit_code == 0
    assert run("range", "release", "0x90000:65536").exit_code == 0
    assert json.loads(run("range", "list", "--json").stdout) == []
    r = run("range", "release", "524288")
    assert r.exit_code == 1 and "no lease" in one_line_error(r)
    r = run("range", "release", "xyz")
    assert r.exit_code == 2
    one_line_error(r)


def test_range_pick_default_owner_is_parent(run, monkeypatch):
    monkeypatch.delenv("SHIFTCTL_PROC_ROOT")
    r = run("range", "pick")
    assert r.exit_code == 0, r.stderr
    data = json.loads(run("range", "list", "--json").stdout)
    assert data[0]["owner_pid"] == os.getppid() and data[0]["live"]


def test_range_pick_dead_owner(run):
    r = run("range", "pick", "--owner-pid", "999")
    assert r.exit_code == 1 and "999" in one_line_error(r)


def test_state_dir_option(run, tmp_path):
    r = run("range", "pick", "--owner-pid", "100", "--state-dir", str(tmp_path / "other"))
    assert r.exit_code == 0
    assert os.listdir(tmp_path / "other" / "leases") == ["524288-65536.lease"]


@pytest.mark.parametrize("args,code", [
    (["--uidmap", "0:1"], 2),
    (["--uidmap", "0:1:0"], 2),
    (["--gidmap", "u:0:1:1"], 2),
    (["--uidmap", "0:1:10", "--uidmap", "5:100:1"], 2),
    (["--userns", "1", "--uidmap", "0:1:1"], 2),
    (["--pick", "--uidmap", "0:1:1"], 2),
    (["--backend", "nope"], 2),
])
def test_mount_user_errors(run, args, code):
    d = run.tmp / "guard"
    (d / "low").mkdir(parents=True)
    (d / "tgt").mkdir()
    r = run("mount", *args, str(d / "low"), str(d / "tgt"))
    assert r.exit_code == code
    assert "Traceback" not in r.output
    if code != 2 or "--backend" not in args:
        one_line_error(r)


def test_mount_refuses_reachable_lower(run):
    import tempfile
    d = tempfile.mkdtemp(dir="/tmp")
    try:
        os.chmod(d, 0o755)
        os.mkdir(os.path.join(d, "low"))
        os.mkdir(os.path.join(d, "tgt"))
        r = run("mount", "--uidmap", "0:131072:65536", os.path.join(d, "low"),
                os.path.join(d, "tgt"))
        assert r.exit_code == 3
        assert "reachable by unprivileged users" in one_line_error(r)
        assert "--force" in r.stderr
    finally:
        import shutil
        shutil.rmtree(d)


def test_mount_missing_dirs(run):
    r = run("mount", "--uidmap", "0:1:1", str(run.tmp / "nope"), str(run.tmp / "nope2"))
    assert r.exit_code == 1
    one_line_error(r)


def test_mount_shiftfs_without_module_is_one_line(run):
    if os.path.exists("/sys/module/shiftfs") or os.geteuid() != 0:
        pytest.skip("only meaningful without shiftfs, as root")
    d = run.tmp / "g"
    (d / "low").mkdir(parents=True)
    (d / "tgt").mkdir()
    os.chmod(d, 0o700)
    r = run("mount", "--pick", "--owner-pid", "100", str(d / "low"), str(d / "tgt"))
    assert r.exit_code == 1 and "fsopen" in one_line_error(r) and "ENODEV" in r.stderr
    # the lease taken for --pick was given back
    assert json.loads(run("range", "list", "--json").stdout) == []


def test_list_from_mountinfo(run, monkeypatch):
    mi = run.tmp / "mountinfo"
    mi.write_text(
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "61 22 0:52 / /mnt/a rw - shiftfs /srv/a rw,shift_uids,shift_gids,"
        "uidmap=0:131072:65536,gidmap=0:131072:65536\n"
        "64 22 254:0 /srv/z /mnt/e rw,idmapped - ext4 /dev/vda rw\n")
    monkeypatch.setenv("SHIFTCTL_MOUNTINFO", str(mi))
    r = run("list")
    assert r.exit_code == 0
    assert r.stdout == "/mnt/a\t/srv/a\tuidmap=0:131072:65536 gidmap=0:131072:65536\n"
    r = run("list", "--all")
    assert r.stdout.splitlines()[1] == "/mnt/e\t/srv/z\t- [idmapped]"
    data = json.loads(run("list", "--json").stdout)
    assert data == [{"target": "/mnt/a", "lower": "/srv/a", "backend": "shiftfs",
                     "mount_id": 61, "shift_uids": True, "shift_gids": True,
                     "uidmap": [[0, 131072, 65536]], "gidmap": [[0, 131072, 65536]],
                     "userns": None,
                     "options": ["rw", "shift_uids", "shift_gids", "uidmap=0:131072:65536",
                                 "gidmap=0:131072:65536"]}]


def test_umount_not_a_mount(run):
    r = run("umount", str(run.tmp))
    assert r.exit_code == 1 and "not a mount point" in one_line_error(r)


def test_umount_refuses_other_fstypes(run):
    r = run("umount", "/proc")
    assert r.exit_code == 1 and "not shiftfs" in one_line_error(r)


def test_run_user_errors(run):
    r = run("run", "--pick", "--range", "0x90000", str(run.tmp), "--", "true")
    assert r.exit_code == 125 and "exclusive" in one_line_error(r)
    r = run("run", str(run.tmp / "missing"), "--", "true")
    assert r.exit_code == 125 and "not a directory" in one_line_error(r)
    r = run("run", str(run.tmp))
    assert r.exit_code == 2          # click: CMD missing


def test_help_lists_commands(run):
    r = run("--help")
    for c in ("mount", "umount", "list", "range", "run"):
        assert c in r.stdout
