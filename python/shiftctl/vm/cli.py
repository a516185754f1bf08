"""`shiftctl vm`: the harness commands."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

import click

from shiftctl.errors import ShiftctlError
from shiftctl.vm import build as kbuild
from shiftctl.vm import fetch, kernels, kmemleak, qemu, report
from shiftctl.vm.paths import build_dir, repo_root
from shiftctl.vm.progress import say

KERNEL_HELP = ("matrix kernel: " + ", ".join(kernels.KERNELS)
               + "; debug kernel (built from source): "
               + ", ".join(kernels.DEBUG_KERNELS))


def _prepare(name: str, with_module: bool = True):
    kernel = fetch.fetch(name)
    ko = kbuild.build(kernel) if with_module else None
    return kernel, ko


def _report_klog(boot: qemu.Boot) -> bool:
    findings = boot.findings
    for kind, line in findings:
        click.echo(f"kernel {boot.kernel.name}: {kind}: {line}", err=True)
    return not findings


@click.group()
def vm() -> None:
    """Fetch Debian kernels, build shiftfs, boot QEMU, run the suite."""


@vm.command("fetch")
@click.option("--kernel", "names", multiple=True, help=KERNEL_HELP)
@click.option("--refresh", is_flag=True, help="re-resolve the newest version")
def fetch_cmd(names: tuple[str, ...], refresh: bool) -> None:
    """Fetch and unpack kernels into the cache."""
    for name in names or kernels.DEFAULT_KERNELS:
        k = fetch.fetch(name, refresh=refresh)
        click.echo(f"{k.name} {k.release} {k.version} {k.root}")


@vm.command("build")
@click.option("--kernel", "names", multiple=True, help=KERNEL_HELP)
def build_cmd(names: tuple[str, ...]) -> None:
    """Build shiftfs.ko for kernels (W=1, warnings fail)."""
    for name in names or kernels.DEFAULT_KERNELS:
        _, ko = _prepare(name)
        click.echo(str(ko))


@vm.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", "name", default=kernels.DEFAULT_KERNELS[0],
              show_default=True, help=KERNEL_HELP)
@click.option("--timeout", default=900, show_default=True,
              help="seconds before the guest is killed")
@click.option("--no-module", is_flag=True, help="do not build or load shiftfs")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(name: str, timeout: int, no_module: bool,
            command: tuple[str, ...]) -> None:
    """Boot KERNEL, load shiftfs, run COMMAND as root; exit with its status."""
    kernel, ko = _prepare(name, not no_module)
    line = shlex.join(command)
    boot = qemu.boot(kernel, ko, line, timeout=timeout)
    clean = _report_klog(boot)
    if boot.timed_out:
        raise ShiftctlError(f"guest timed out after {timeout}s")
    if boot.status is None:
        raise ShiftctlError("guest died without reporting a status "
                            f"(console: {boot.rundir}/console.log)")
    if not clean:
        raise ShiftctlError("the guest's kernel log shows the reports above")
    sys.exit(boot.status)


def test_kernel(name: str, pytest_args: tuple[str, ...], timeout: int,
                python: str, suite: str = "tests/conformance",
                tag: str = "test") -> report.Row:
    kernel, ko = _prepare(name)
    junit = "/results/junit.xml"
    command = (f"{shlex.quote(python)} -m pytest -p no:cacheprovider "
               f"--junitxml={junit} -o junit_family=xunit2 -rfEs "
               f"--color={'yes' if sys.stdout.isatty() else 'no'} "
               + shlex.join([*suite.split(), *pytest_args]))
    row = report.Row(kernel=name, release=kernel.release,
                     version=kernel.version)
    boot = qemu.boot(kernel, ko, command, timeout=timeout, tag=tag,
                     env={"SHIFTFS_MATRIX_KERNEL": name})
    row.console = boot.rundir / "console.log" if boot.rundir else None
    row.seconds = boot.seconds
    row.status = boot.status
    row.klog_clean = _report_klog(boot)
    for fname, data in boot.files.items():
        # suite reports (differential, ...); a debug kernel's kmemleak scan
        if fname.endswith(".json") or fname == kmemleak.RESULT:
            stem, ext = fname.rsplit(".", 1)
            (build_dir() / f"{stem}-{kernel.name}.{ext}").write_bytes(data)
    xml = boot.files.get("junit.xml")
    out = build_dir() / f"junit-{name}.xml"
    if xml:
        out.write_bytes(xml)
        row.counts = report.junit_counts(xml)
    elif out.exists():
        out.unlink()
    if boot.timed_out:
        row.note = f"timed out after {timeout}s"
    elif boot.status is None:
        row.note = "guest died without a status"
    elif not xml:
        row.note = "no JUnit XML"
    return row


@vm.command("test", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", "names", multiple=True, help=KERNEL_HELP)
@click.option("--timeout", default=2400, show_default=True,
              help="seconds per kernel before the guest is killed")
@click.option("--suite", default="tests/conformance", show_default=True,
              help="test directory, relative to the checkout")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def test_cmd(names: tuple[str, ...], timeout: int, suite: str,
             pytest_args: tuple[str, ...]) -> None:
    """Run tests/conformance in the guest of each KERNEL; print a table."""
    python = sys.executable
    rows = []
    t0 = time.monotonic()
    for name in names or kernels.DEFAULT_KERNELS:
        try:
            rows.append(test_kernel(name, pytest_args, timeout, python,
                                    suite))
        except ShiftctlError as err:
            say(f"kernel {name}: {err}")
            k = fetch.load(name)
            rows.append(report.Row(kernel=name,
                                   release=k.release if k else "?",
                                   version=k.version if k else "?",
                                   note=str(err).splitlines()[0]))
    text = report.table(rows)
    (build_dir() / "vm-test-report.txt").write_text(text + "\n")
    click.echo("")
    click.echo(text)
    click.echo(f"(total {time.monotonic() - t0:.0f}s; JUnit XML in "
               f"{build_dir()}/junit-<kernel>.xml)")
    passed = sum(r.counts.passed for r in rows)
    failed = sum(r.counts.failed + r.counts.errors for r in rows)
    skipped = sum(r.counts.skipped for r in rows)
    bad = [r.kernel for r in rows if not r.ok]
    click.echo(f"vm-test: {passed} passed, {failed} failed, {skipped} skipped"
               + (f" (failing kernels: {' '.join(bad)})" if bad else ""))
    if bad:
        sys.exit(1)


def _suite_reports(name: str) -> list[Path]:
    """What one boot of kernel name leaves in build/ (see test_kernel)."""
    return [build_dir() / f"{kind}-{name}.{ext}"
            for kind, ext in (("junit", "xml"), ("kmemleak", "txt"),
                              ("reliability", "json"),
                              ("differential", "json"))]


# A suite is one boot: test paths, then pytest options for that boot only.
DEBUG_SUITES = (
    "tests/conformance",
    "tests/reliability/test_load.py",
    "tests/reliability --ignore=tests/reliability/host "
    "--ignore=tests/reliability/test_load.py",
)


def suite_label(suite: str) -> str:
    """The short name of a suite: its first path's last part, no test_."""
    first = (suite.split() or [suite])[0]
    return first.rstrip("/").rsplit("/", 1)[-1].removesuffix(".py") \
        .removeprefix("test_")


def _kmemleak_selfcheck(kernel: fetch.Kernel) -> None:
    """kmemleak-test.ko leaks on load: a scan that misses it means nothing."""
    from shiftctl.vm.debugkernel import LEAK_MODULE

    boot = qemu.boot(kernel, None, f"modprobe {LEAK_MODULE}", timeout=1800,
                     tag="kmemleak-check", stream=False)
    text = boot.files.get(kmemleak.RESULT, b"").decode(errors="replace")
    caught = [x for x in kmemleak.parse(text) if x.comm == "modprobe"]
    if boot.status != 0 or not caught:
        raise ShiftctlError(
            f"kmemleak self-check: the leaks of {LEAK_MODULE}.ko were not "
            f"reported (status {boot.status}; console: {boot.rundir})")
    say(f"kmemleak self-check: {len(caught)} leaks of {LEAK_MODULE}.ko "
        f"caught ({boot.seconds:.0f}s)")


@vm.command("debug", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", "name", default=next(iter(kernels.DEBUG_KERNELS)),
              show_default=True, type=click.Choice(list(kernels.DEBUG_KERNELS)))
@click.option("--suite", "suites", multiple=True, default=DEBUG_SUITES,
              show_default=True,
              help="one boot each: test paths, then pytest options for it")
@click.option("--timeout", default=7200, show_default=True,
              help="seconds per suite before the guest is killed")
@click.option("--no-selfcheck", is_flag=True,
              help="skip the boot that checks a leaking module is caught")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def debug_cmd(name: str, suites: tuple[str, ...], timeout: int,
              no_selfcheck: bool, pytest_args: tuple[str, ...]) -> None:
    """The debug-kernel lane: KASAN/lockdep/kmemleak kernel, the suites."""
    from shiftctl.vm import debugkernel

    t0 = time.monotonic()
    cached = debugkernel.load(name) is not None
    kernel = fetch.fetch(name)
    built = debugkernel.build_seconds(name)
    say(f"debug kernel {name}: {kernel.release}, "
        + ("cached" if cached else "built now")
        + (f" (its build took {built / 60:.1f} min)" if built else ""))
    if not no_selfcheck:
        _kmemleak_selfcheck(kernel)
    rows, leaks = [], []
    for suite in suites:
        label = suite_label(suite)
        for f in _suite_reports(name):      # none left from an older run
            f.unlink(missing_ok=True)
        row = test_kernel(name, pytest_args, timeout, sys.executable, suite,
                          tag=f"debug-{label}")
        row.kernel = f"{name} {label}"
        if row.console and row.console.exists():
            # the full lockdep/KASAN reports: the summary has one line each
            shutil.copyfile(row.console,
                            build_dir() / f"console-{name}-{label}.log")
        rows.append(row)
        # each suite's own reports, before the next boot writes its own
        for f in _suite_reports(name):
            if f.exists():
                f.rename(f.with_name(f"{f.stem}-{label}{f.suffix}"))
        report_file = build_dir() / f"kmemleak-{name}-{label}.txt"
        found = (kmemleak.parse(report_file.read_text(errors="replace"))
                 if report_file.exists() else None)
        leaks.append(f"{label}: " + (
            "no scan" if found is None else
            f"{len(found)} suspected leaks "
            f"({sum(x.involves_module for x in found)} in shiftfs)"))
    text = report.table(rows)
    (build_dir() / "vm-debug-report.txt").write_text(text + "\n")
    click.echo("")
    click.echo(text)
    click.echo("kmemleak: " + "; ".join(leaks))
    passed = sum(r.counts.passed for r in rows)
    failed = sum(r.counts.failed + r.counts.errors for r in rows)
    skipped = sum(r.counts.skipped for r in rows)
    click.echo(f"vm-debug: {passed} passed, {failed} failed, {skipped} "
               f"skipped (total {time.monotonic() - t0:.0f}s)")
    if not all(r.ok for r in rows):
        sys.exit(1)


@vm.command("checkpatch")
@click.argument("files", nargs=-1, required=True)
def checkpatch_cmd(files: tuple[str, ...]) -> None:
    """Run the kernel's checkpatch.pl --no-tree -f on FILES."""
    import subprocess

    from shiftctl.vm import source

    script = source.checkpatch()
    bad = 0
    for f in files:
        proc = subprocess.run(["perl", str(script), "--no-tree", "--terse",
                               "--show-types", "-f", f],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        lines = [ln for ln in proc.stdout.splitlines()
                 if ": ERROR:" in ln or ": WARNING:" in ln or ": CHECK:" in ln]
        for ln in lines:
            click.echo(ln)
        bad += bool(lines) or proc.returncode != 0
    click.echo(f"checkpatch: {len(files) - bad} clean, {bad} with findings")
    if bad:
        sys.exit(1)


@vm.command("kconfig-check")
@click.option("--kernel", "name", default="6.1", show_default=True,
              help="whose linux-source to patch")
def kconfig_check_cmd(name: str) -> None:
    """Apply Kconfig.patch to linux-source, build fs/shiftfs in-tree."""
    from shiftctl.vm import intree

    t0 = time.monotonic()
    ko = intree.check(name)
    click.echo(f"kconfig-check: {ko} built in-tree without warnings "
               f"({time.monotonic() - t0:.0f}s)")


def _compile_fsbench() -> str:
    import subprocess

    src = repo_root() / "bench" / "fsbench.c"
    out = build_dir() / "fsbench"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                        str(out), str(src)], check=True)
    return str(out)


@vm.command("bench")
@click.option("--kernel", "names", multiple=True, help=KERNEL_HELP)
@click.option("--rounds", default=5, show_default=True)
@click.option("--fs", "fss", default="tmpfs,ext4", show_default=True,
              help="lower filesystems, comma-separated")
@click.option("--smoke", is_flag=True, help="one round, small sizes")
@click.option("--workloads", default=None,
              help="only these workloads, comma-separated (W1,...)")
@click.option("--paths", default=None,
              help="only these paths besides native, comma-separated")
@click.option("--profile", "profiles", multiple=True, metavar="PATH:WORKLOAD",
              help="first run WORKLOAD on PATH once under perf record")
@click.option("--no-scaling", is_flag=True,
              help="skip the extent scaling and memory parts")
@click.option("--timeout", default=5400, show_default=True)
@click.option("--readme", is_flag=True,
              help="embed the table in README.md (between bench markers)")
def bench_cmd(names: tuple[str, ...], rounds: int, fss: str, smoke: bool,
              workloads: str | None, paths: str | None,
              profiles: tuple[str, ...], no_scaling: bool,
              timeout: int, readme: bool) -> None:
    """Benchmark shiftfs against native, idmapped, overlayfs and FUSE."""
    import json

    from shiftctl.bench import report as breport
    from shiftctl.bench.guest import check_selection

    try:
        check_selection(workloads, paths, profiles)
    except ValueError as err:
        raise ShiftctlError(str(err)) from None
    fsbench = _compile_fsbench()
    failed = []
    for name in names or kernels.DEFAULT_KERNELS:
        kernel, ko = _prepare(name)
        command = (f"{shlex.quote(sys.executable)} -m shiftctl.bench.guest "
                   f"--fsbench {shlex.quote(fsbench)} --fs {shlex.quote(fss)} "
                   f"--rounds {1 if smoke else rounds}"
                   + (" --smoke" if smoke else "")
                   + "".join(f" --{k} {shlex.quote(v)}" for k, v in
                             (("workloads", workloads), ("paths", paths))
                             if v)
                   + "".join(f" --profile {shlex.quote(p)}" for p in profiles)
                   + (" --no-scaling" if no_scaling else ""))
        partial = bool(workloads or paths or no_scaling)
        boot = qemu.boot(kernel, ko, command, timeout=timeout, tag="bench",
                         memory="8G")
        clean = _report_klog(boot)
        raw = boot.files.get("bench.json")
        if boot.status != 0 or not raw or not clean:
            failed.append(name)
            say(f"kernel {name}: bench failed (status {boot.status})")
            continue
        doc = json.loads(raw)
        doc["kernel_version"] = kernel.version
        suffix = "-smoke" if smoke else "-partial" if partial else ""
        for fname, text in boot.files.items():
            if fname.startswith("profile-"):
                (build_dir() / f"bench-{name}-{fname}").write_bytes(text)
        (build_dir() / f"bench-{name}{suffix}.json").write_text(
            json.dumps(doc, indent=1) + "\n")
        md = breport.markdown(doc)
        (build_dir() / f"bench-{name}{suffix}.md").write_text(md)
        click.echo(md)
        for line in breport.targets(doc):
            click.echo(line)
        if readme and not smoke and not partial:
            _embed_readme(name, md)
    if failed:
        raise ShiftctlError(f"bench failed on: {' '.join(failed)}")


def _embed_readme(name: str, md: str) -> None:
    readme = repo_root() / "README.md"
    text = readme.read_text()
    if name in ("differential", "reliability"):
        begin, end = f"<!-- {name} begin -->", f"<!-- {name} end -->"
    else:
        begin = f"<!-- bench {name} begin -->"
        end = f"<!-- bench {name} end -->"
    if begin not in text:
        say(f"README.md has no {begin} marker; not embedded")
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{md}{end}{tail}")


def _load_reports(kind: str, how: str) -> dict[str, dict]:
    """build/<kind>-<kernel>.json for every matrix kernel that has one."""
    import json

    docs = {}
    for name in kernels.KERNELS:
        f = build_dir() / f"{kind}-{name}.json"
        if f.exists():
            docs[name] = json.loads(f.read_text())
    if not docs:
        raise ShiftctlError(f"no build/{kind}-<kernel>.json: run `{how}` "
                            "first")
    return docs


@vm.command("reliability-report")
@click.option("--readme", is_flag=True, help="embed the table in README.md")
def reliability_report_cmd(readme: bool) -> None:
    """The reliability figures from build/reliability-<kernel>.json."""
    from shiftctl.vm import relreport

    docs = _load_reports("reliability", "make vm-reliability")
    md = relreport.table(docs)
    click.echo(md)
    if readme:
        _embed_readme("reliability", md)


@vm.command("diff-report")
@click.option("--readme", is_flag=True, help="embed the matrix in README.md")
@click.option("--update-reference", "ref_kernel", default=None,
              help="write differential/reference.json from this kernel's "
                   "idmapped outcomes (e.g. 6.12)")
def diff_report_cmd(readme: bool, ref_kernel: str | None) -> None:
    """The differential matrix (kernel x fs) from build/differential-*.json."""
    import json

    docs = _load_reports("differential", "make vm-test")
    fss = ["tmpfs", "ext4", "xfs", "btrfs"]
    lines = ["| kernel | " + " | ".join(fss) + " |",
             "|---" * (len(fss) + 1) + "|"]
    for name, doc in docs.items():
        cells = []
        for fs in fss:
            r = doc["fs"].get(fs)
            if not r:
                cells.append("-")
                continue
            against = "" if r["against"] == "idmapped" else " (vs reference)"
            div = r.get("divergent", 0)
            cells.append(f"{r['equal']}/{r['total']} equal"
                         + (f" + {div} documented" if div else "")
                         + f"{against}, {r['seconds']:.0f}s")
        lines.append(f"| {name} ({doc['kernel']}) | " + " | ".join(cells)
                     + " |")
    any_doc = next(iter(docs.values()))
    lines.append("")
    lines.append(f"{any_doc['cases']} cases x {any_doc['actors']} actors = "
                 f"{any_doc['cases'] * any_doc['actors']} distinct (case, "
                 "actor) combinations; every actor on ext4, host root, "
                 "container root and a container user on the others.")
    md = "\n".join(lines) + "\n"
    click.echo(md)
    if ref_kernel:
        doc = docs.get(ref_kernel)
        if not doc:
            raise ShiftctlError(f"no differential results for {ref_kernel}")
        ref = {k: v for k, v in doc["outcomes"].items()
               if k.startswith("tmpfs|")}
        div = {k: v for k, v in doc.get("divergent", {}).items()
               if k.startswith("tmpfs|")}
        out = repo_root() / "tests" / "conformance" / "differential" / \
            "reference.json"
        out.write_text(json.dumps({"kernel": doc["kernel"], "digests": ref,
                                   "divergent": div},
                                  indent=0, sort_keys=True) + "\n")
        click.echo(f"wrote {out} ({len(ref)} outcomes from {doc['kernel']})")
    if readme:
        _embed_readme("differential", md)
