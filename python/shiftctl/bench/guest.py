"""The benchmark driver that runs inside the guest (one boot per kernel).

For each lower filesystem it builds one base-0 tree, puts every access path
over it (native, shiftfs, idmapped, overlayfs, bindfs, fuse-overlayfs), and
runs each workload on each path in interleaved rounds: W1 on A B C ..., W1
on A B C ... again, and so on.  Each run is one fsbench process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BASE = 0x20000          # the view: disk id N is seen as BASE + N
COUNT = 0x10000
ROOT = Path("/bench")


@dataclass(frozen=True)
class Scale:
    files: int = 10_000
    dirs: int = 100
    stat_reps: int = 10
    creates: int = 5_000
    opens: int = 100_000
    read_mib: int = 512
    write_mib: int = 256
    mmap_reads: int = 200_000
    walk_files: int = 100_000


SMOKE = Scale(files=200, dirs=10, stat_reps=2, creates=100, opens=1000,
              read_mib=8, write_mib=4, mmap_reads=2000, walk_files=2000)

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8")
PATHS = ("native", "shiftfs", "idmapped", "overlayfs", "bindfs",
         "fuse-overlayfs")


def check_selection(workloads: str | None, paths: str | None,
                    profiles: tuple[str, ...] = ()) -> None:
    """ValueError with a one-line reason for an unknown workload or path."""
    for w in (workloads.split(",") if workloads else ()):
        if w not in WORKLOADS:
            raise ValueError(f"unknown workload {w!r} (known: "
                             f"{', '.join(WORKLOADS)})")
    for p in (paths.split(",") if paths else ()):
        if p not in PATHS:
            raise ValueError(f"unknown path {p!r} (known: {', '.join(PATHS)})")
    for spec in profiles:
        path, _, w = spec.partition(":")
        if path not in PATHS or w not in WORKLOADS:
            raise ValueError(f"--profile wants PATH:WORKLOAD, got {spec!r}")


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stdout.strip()}")
    return proc


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def shiftctl() -> str:
    return str(Path(sys.executable).with_name("shiftctl"))


def extents(n: int) -> list[str]:
    """The map 0:BASE:COUNT split into n contiguous extents."""
    out, start = [], 0
    for i in range(n):
        size = COUNT // n + (1 if i < COUNT % n else 0)
        out.append(f"{start}:{BASE + start}:{size}")
        start += size
    return out


class Lower:
    """One lower filesystem with the tree and the data file on it."""

    def __init__(self, fs: str, scale: Scale) -> None:
        self.fs, self.scale = fs, scale
        # The filesystem is mounted at disk/; the lower dir is disk/lower,
        # so overlay uppers can live on the same filesystem beside it.
        self.disk = ROOT / fs / "disk"
        self.dir = self.disk / "lower"
        self.disk.mkdir(parents=True, exist_ok=True)
        if fs == "tmpfs":
            sh("mount", "-t", "tmpfs", "-o", "size=3g", "benchlower",
               str(self.disk))
        elif fs == "ext4":
            img = Path("/scratch") / "bench-ext4.img"
            sh("truncate", "-s", "3G", str(img))
            sh("mkfs.ext4", "-q", "-F", str(img))
            sh("mount", "-o", "loop", str(img), str(self.disk))
        else:
            raise SystemExit(f"bench: unknown lower fs {fs}")
        self.dir.mkdir()

    def prepare(self, fsbench: str) -> None:
        s = self.scale
        tree = self.dir / "tree"
        tree.mkdir()
        sh(fsbench, "prepare-tree", str(tree), str(s.files), str(s.dirs))
        sh(fsbench, "prepare-file", str(self.dir / "data"), str(s.read_mib))
        # one scratch dir per path, made before anything is mounted (the
        # overlays must not see their lower change under them)
        (self.dir / "scratch").mkdir()
        for p in PATHS:
            (self.dir / "scratch" / p).mkdir()
        for d in (self.dir, tree, self.dir / "scratch"):
            os.chmod(d, 0o755)


class Paths:
    """Mount every access path over the lower; unmount them at the end."""

    def __init__(self, lower: Lower, maps: int = 1) -> None:
        self.lower = lower
        self.top = ROOT / lower.fs
        self.points: dict[str, Path] = {"native": lower.dir}
        self.maps = maps
        self.skipped: dict[str, str] = {}

    def mount_all(self, names: tuple[str, ...] = PATHS) -> None:
        for name in names:
            if name == "native":
                continue
            mnt = self.top / name
            mnt.mkdir(parents=True, exist_ok=True)
            try:
                self._mount(name, mnt)
                self.points[name] = mnt
            except RuntimeError as err:
                msg = str(err).splitlines()[-1]
                self.skipped[name] = msg.split("shiftctl: ", 1)[-1][:200]
                log(f"{self.lower.fs}: no {name} path: {self.skipped[name]}")

    def _mount(self, name: str, mnt: Path) -> None:
        low = str(self.lower.dir)
        m = extents(self.maps)
        if name == "shiftfs":
            args = [shiftctl(), "mount", "--force"]
            for e in m:
                args += ["--uidmap", e, "--gidmap", e]
            sh(*args, low, str(mnt))
        elif name == "idmapped":
            args = [shiftctl(), "mount", "--force", "--backend", "idmapped"]
            for e in m:
                args += ["--uidmap", e, "--gidmap", e]
            sh(*args, low, str(mnt))
        elif name == "overlayfs":
            self._overlay(mnt)
        elif name == "bindfs":
            sh("bindfs", f"--uid-offset={BASE}",
               f"--gid-offset={BASE}", low, str(mnt))
        elif name == "fuse-overlayfs":
            up, wk = self.lower.disk / "fo-upper", self.lower.disk / "fo-work"
            up.mkdir(exist_ok=True)
            wk.mkdir(exist_ok=True)
            sh("fuse-overlayfs", "-o",
               f"lowerdir={low},upperdir={up},workdir={wk},"
               f"uidmapping=0:{BASE}:{COUNT},gidmapping=0:{BASE}:{COUNT},"
               "allow_other",
               str(mnt))

    def _overlay(self, mnt: Path) -> None:
        # The lower is the only layer; writes need an upper, which lives on
        # the same lower filesystem so data workloads hit the same device.
        up, wk = self.lower.disk / "ovl-upper", self.lower.disk / "ovl-work"
        up.mkdir(exist_ok=True)
        wk.mkdir(exist_ok=True)
        sh("mount", "-t", "overlay", "-o",
           f"lowerdir={self.lower.dir},upperdir={up},workdir={wk}",
           "benchovl", str(mnt))

    def umount_all(self) -> None:
        for name, mnt in reversed(list(self.points.items())):
            if name != "native":
                sh("umount", str(mnt), check=False)
        self.points = {"native": self.lower.dir}


def actor(path: str) -> list[str]:
    """Who runs a workload: host root on the base-0 lower itself and on
    overlayfs (which shifts nothing: a container would see only overflow
    ids); on every shifting path the container's root (a user namespace
    mapping 0..65535 to BASE), the process the shift exists for."""
    if path in ("native", "overlayfs"):
        return []
    return [sys.executable, "-m", "shiftctl.nsexec", "--map",
            f"0:{BASE}:{COUNT}", "--"]


def command(fsbench: str, workload: str, path: str, mnt: Path,
            s: Scale) -> list[str]:
    """The fsbench command line for one run, as the path's actor."""
    tree, data = mnt / "tree", mnt / "data"
    scratch = mnt / "scratch" / path   # W3 and W7 remove what they make
    args = {
        "W1": [str(tree), str(s.files), str(s.dirs), str(s.stat_reps)],
        "W2": [str(tree)],
        "W3": [str(scratch), str(s.creates)],
        "W4": [str(tree), str(s.files), str(s.dirs), "1000", "1000"],
        "W5": [str(data), str(s.opens)],
        "W6": [str(data)],
        "W7": [str(scratch / "w7"), str(s.write_mib)],
        "W8": [str(data), str(s.mmap_reads)],
    }[workload]
    return [*actor(path), fsbench, workload, *args]


def run_one(fsbench: str, workload: str, path: str, mnt: Path,
            s: Scale, tag: str, lower: Path) -> float:
    out = sh(*command(fsbench, workload, path, mnt, s)).stdout.strip()
    out = out.splitlines()[-1]
    return float(out)


def slab_kib() -> int:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        fields[k] = int(v.split()[0])
    return fields["Slab"]


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def memory(fs: str, paths: Paths, fsbench: str, s: Scale) -> dict:
    """Slab growth per cached file: walk via shiftfs minus walk via lower."""
    walk = paths.lower.dir / "walk"
    walk.mkdir(exist_ok=True)
    sh(fsbench, "prepare-tree", str(walk), str(s.walk_files), "100")
    result = {}
    for name in ("native", "shiftfs"):
        if name not in paths.points:
            continue
        drop_caches()
        time.sleep(1)
        before = slab_kib()
        sh(*actor(name), fsbench, "W2", str(paths.points[name] / "walk"))
        result[name] = slab_kib() - before
    drop_caches()
    if "shiftfs" in result:
        extra = (result["shiftfs"] - result["native"]) * 1024 / s.walk_files
        result["extra_bytes_per_file"] = round(extra, 1)
    return result


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def records(fs: str, times: dict[tuple[str, str], list[float]],
            extra: dict | None = None) -> list[dict]:
    out = []
    for (workload, path), xs in sorted(times.items()):
        native = times.get((workload, "native"))
        med = median(xs)
        rec = {"fs": fs, "path": path, "workload": workload,
               "median_s": med, "min_s": min(xs), "max_s": max(xs),
               "rounds": len(xs),
               "ratio_to_native": (med / median(native)
                                   if native and median(native) > 0 else None)}
        rec.update(extra or {})
        out.append(rec)
    return out


def profile(fsbench: str, spec: str, paths: Paths, s: Scale,
            out_dir: Path) -> None:
    """perf record (cpu-clock) of one run of a workload on one path; the
    flat profile of the fsbench process goes to the log and to out_dir."""
    path, workload = spec.split(":", 1)
    if path not in paths.points:
        log(f"profile: no {path} path")
        return
    data = Path("/scratch") / f"perf-{paths.lower.fs}-{path}-{workload}.data"
    # once untimed first: the profile is of the warm caches the rounds see
    sh(*command(fsbench, workload, path, paths.points[path], s))
    # -a: the run's own process sits in a user namespace on the shifting
    # paths; the report keeps the fsbench process, relative to itself
    rec = sh("perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", "10000",
             "-o",
             str(data), "--",
             *command(fsbench, workload, path, paths.points[path], s),
             check=False)
    if rec.returncode != 0:
        log(f"profile: perf record failed: {rec.stdout.strip()[-300:]}")
        return
    rep = sh("perf", "report", "-i", str(data), "--stdio", "--no-children",
             "--comms", "fsbench", "--percentage", "relative",
             "--sort", "sym", "--percent-limit", "0.4",
             check=False).stdout
    name = f"profile-{paths.lower.fs}-{path}-{workload}.txt"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(rep)
    lines = [ln for ln in rep.splitlines()
             if ln.strip() and not ln.startswith("#")]
    for line in lines[:40]:
        if line.strip():
            log(f"profile {paths.lower.fs} {path} {workload}: {line.strip()}")


def bench_fs(fs: str, fsbench: str, s: Scale, rounds: int,
             workloads: tuple[str, ...], names: tuple[str, ...] = PATHS,
             profiles: tuple[str, ...] = (), out_dir: Path = Path("/results"),
             scaling_on: bool = True) -> tuple[list[dict], dict]:
    lower = Lower(fs, s)
    lower.prepare(fsbench)
    paths = Paths(lower)
    paths.mount_all(names)
    for spec in profiles:
        profile(fsbench, spec, paths, s, out_dir)
    times: dict[tuple[str, str], list[float]] = {}
    for w in workloads:
        for r in range(rounds):
            for p, mnt in paths.points.items():
                t = run_one(fsbench, w, p, mnt, s, f"r{r}", lower.dir)
                times.setdefault((w, p), []).append(t)
        meds = {p: median(times[(w, p)]) for p in paths.points}
        log(f"{fs} {w}: " + "  ".join(f"{p} {v:.4f}s" for p, v in meds.items()))
    recs = records(fs, times)
    mem = memory(fs, paths, fsbench, s) if scaling_on else {}
    paths.umount_all()
    # Scaling: W1 and W4 through shiftfs with 1, 5 and 340 extents.
    scaling: list[dict] = []
    for n in ((1, 5, 340) if scaling_on else ()):
        sp = Paths(lower, maps=n)
        sp.mount_all(("shiftfs",))
        if "shiftfs" not in sp.points:
            continue
        st: dict[tuple[str, str], list[float]] = {}
        for w in ("W1", "W4"):
            for r in range(rounds):
                for p in ("native", "shiftfs"):
                    t = run_one(fsbench, w, p, sp.points[p], s, f"x{n}r{r}",
                                lower.dir)
                    st.setdefault((w, p), []).append(t)
        scaling += [rec for rec in records(fs, st, {"extents": n})
                    if rec["path"] == "shiftfs"]
        sp.umount_all()
    return recs, {"memory": mem, "scaling": scaling,
                  "skipped_paths": paths.skipped}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shiftctl-bench-guest")
    ap.add_argument("--fsbench", required=True)
    ap.add_argument("--fs", default="tmpfs,ext4")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--profile", action="append", default=[],
                    help="PATH:WORKLOAD to run once under perf first")
    ap.add_argument("--no-scaling", action="store_true",
                    help="skip the extent scaling and memory parts")
    ap.add_argument("--out", default="/results/bench.json")
    a = ap.parse_args(argv)
    names = tuple(p for p in PATHS if p in a.paths.split(",") or p == "native")
    scale = SMOKE if a.smoke else Scale()
    doc: dict = {"kernel": os.uname().release,
                 "date": time.strftime("%Y-%m-%d"), "rounds": a.rounds,
                 "smoke": a.smoke, "scale": scale.__dict__, "records": [],
                 "memory": {}, "scaling": [], "skipped_paths": {}}
    for fs in a.fs.split(","):
        recs, extra = bench_fs(fs, a.fsbench, scale, a.rounds,
                               tuple(a.workloads.split(",")), names,
                               tuple(a.profile), Path(a.out).parent,
                               not a.no_scaling)
        doc["records"] += recs
        doc["memory"][fs] = extra["memory"]
        doc["scaling"] += extra["scaling"]
        doc["skipped_paths"][fs] = extra["skipped_paths"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {a.out}: {len(doc['records'])} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
