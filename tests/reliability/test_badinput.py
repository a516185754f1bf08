"""Bad input: a generated (seeded) corpus of malformed and hostile shiftfs
option strings and fsconfig(2) sequences.  Each must fail with EINVAL (or
the errno the VFS itself gives before the filesystem sees the parameter:
EBADF for a bad fd, ENOENT for a missing SET_PATH path), none may mount,
and where shiftfs or the VFS parser rejected it a reason must be readable
in the fs_context log.  mount(2) cases check the errno and that nothing
got mounted (their reason only goes to the kernel log).

The corpus (a JSON line per case) is written to /results/badinput-corpus.jsonl.
"""

import ctypes
import errno
import json
import os
import random
from pathlib import Path

import pytest

from conftest import (CORPUS_SIZE, FIGURES, NR_fsconfig, NR_fsmount,
                      NR_fsopen, RESULTS, libc)

SEED = 20240909
U32 = 2 ** 32
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_BINARY = 2
FSCONFIG_SET_PATH = 3
FSCONFIG_SET_PATH_EMPTY = 4
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
AT_FDCWD = -100


def hexdec(rng, n):
    return hex(n) if rng.random() < 0.5 else str(n)


# ------------------------------------------------------------ generators
# Each returns (category, steps, allowed errnos, reason expected).  A step
# is (cmd, key, value) with value a str, bytes (binary), an int fd
# placeholder name, or None.  "LOWER" stands for a real lower directory.

def g_overflow(rng):
    big = rng.choice([U32, U32 + 1, 2 ** 33, 2 ** 63, 2 ** 64, 2 ** 64 + 1,
                      10 ** 20, 10 ** 40])
    f = [hexdec(rng, 1), hexdec(rng, 0x20000), hexdec(rng, 10)]
    f[rng.randrange(3)] = hexdec(rng, big)
    return "overflowing number", [("flag", "shift_uids", None),
                                  ("str", "uidmap", ":".join(f))]


MALFORMED = ["", ":", "::", ":::", "1:2", "1:2:3:4", "1::3", ":2:3", "1:2:",
             " 1:2:3", "1 :2:3", "1:2:3 ", "-1:0:10", "+1:0:1", "0x:1:1",
             "0xg:1:1", "1e3:0:1", "1:2:3x", "x1:2:3", "1,2,3", "1;2;3",
             "0x-1:0:1", "1:0x:1", "00x1:0:1", "1.0:0:1", "0b1:0:1",
             "\t1:2:3", "1:2:3\n", "1:-0:1", "\u00e91:2:3", "0X:0:1",
             "18446744073709551616:0:1"]


def g_malformed(rng):
    v = rng.choice(MALFORMED)
    if rng.random() < 0.3:
        v = v + rng.choice([":", "::1", "x", ",", "0:"])
    key, flag = rng.choice([("uidmap", "shift_uids"),
                            ("gidmap", "shift_gids")])
    return "malformed extent", [("flag", flag, None), ("str", key, v)]


def g_count0(rng):
    return "COUNT 0", [("flag", "shift_uids", None),
                       ("str", "uidmap", f"{hexdec(rng, rng.randrange(U32 - 1))}:"
                                         f"{hexdec(rng, rng.randrange(U32 - 1))}:"
                                         f"{rng.choice(['0', '0x0', '00'])}")]


def g_wrap(rng):
    count = rng.randrange(2, 0x100000)
    start = U32 - rng.randrange(1, count)
    other = rng.randrange(0, 0x1000000)
    f = (start, other) if rng.random() < 0.5 else (other, start)
    return "wrap past 2^32-1", [("flag", "shift_gids", None),
                                ("str", "gidmap", f"{hexdec(rng, f[0])}:"
                                                  f"{hexdec(rng, f[1])}:"
                                                  f"{hexdec(rng, count)}")]


def g_u32max(rng):
    count = rng.randrange(1, 0x10000)
    last = U32 - 1
    if rng.random() < 0.5:
        v = f"{hexdec(rng, last - count + 1)}:0:{hexdec(rng, count)}"
    else:
        v = f"0:{hexdec(rng, last - count + 1)}:{hexdec(rng, count)}"
    return "id 4294967295", [("flag", "shift_uids", None),
                             ("str", "uidmap", v)]


def g_overlap(rng):
    a = rng.randrange(0, 0x1000000)
    n = rng.randrange(2, 0x10000)
    b = a + rng.randrange(0, n)            # overlapping start
    t1, t2 = rng.randrange(0x1000000, 0x2000000), rng.randrange(0x3000000,
                                                                0x4000000)
    if rng.random() < 0.5:                 # overlap on the disk side
        e1, e2 = f"{a}:{t1}:{n}", f"{b}:{t2}:{n}"
    else:                                  # overlap on the view side
        e1, e2 = f"{t1}:{a}:{n}", f"{t2}:{b}:{n}"
    if rng.random() < 0.2:
        e2 = e1                            # exact duplicate key and value
    key, flag = rng.choice([("uidmap", "shift_uids"),
                            ("gidmap", "shift_gids")])
    return "overlapping/duplicate extents", [("flag", flag, None),
                                             ("str", key, e1),
                                             ("str", key, e2)]


def g_many(rng):
    n = rng.choice([341, 342, 350, 400, 1000])
    steps = [("flag", "shift_uids", None)]
    for i in range(n):
        steps.append(("str", "uidmap", f"{i * 16}:{0x100000 + i * 16}:8"))
    return f"more than 340 extents", steps


def g_map_no_flag(rng):
    key = rng.choice(["uidmap", "gidmap"])
    steps = [("str", key, "0:0x20000:0x10000")]
    if rng.random() < 0.5:                 # the other flag only
        steps.insert(0, ("flag", "shift_gids" if key == "uidmap"
                         else "shift_uids", None))
        steps.append(("str", "gidmap" if key == "uidmap" else "uidmap",
                      "0:0x20000:0x10000"))
    return "map without its flag", steps


def g_flag_no_map(rng):
    steps = [("flag", rng.choice(["shift_uids", "shift_gids"]), None)]
    if rng.random() < 0.5:
        steps = [("flag", "shift_uids", None), ("flag", "shift_gids", None),
                 ("str", rng.choice(["uidmap", "gidmap"]),
                  "0:0x20000:0x10000")]
    return "flag without map", steps


def g_missing_lower(rng):
    # "" (empty source) is tested on its own: test_empty_source_is_refused
    kind = rng.choice(["none", "nonexistent", "file", "dev"])
    steps = [("flag", "shift_uids", None),
             ("str", "uidmap", "0:0x20000:0x10000")]
    src = {"none": None, "nonexistent": f"/nonexistent/{rng.randrange(10 ** 9)}",
           "file": "/etc/passwd", "empty": "", "dev": "/dev/null"}[kind]
    return f"missing lower ({kind})", steps, src


def g_userns_bad(rng):
    target = rng.choice(["/etc/passwd", "/proc/self/ns/net",
                         "/proc/self/ns/mnt", "/proc/self/ns/pid",
                         "/nonexistent", "DEADPID", "DEADPID", "",
                         "/proc/self", "/dev/null", "PIPEFD", "NETFD",
                         "/proc/1/ns/../status"])
    steps = [("flag", "shift_uids", None), ("str", "userns", target)]
    return "userns that is not one", steps


def g_userns_combo(rng):
    steps = [("flag", "shift_uids", None),
             ("str", "userns", "/proc/self/ns/user"),
             ("str", "uidmap", "0:0x20000:0x10000")]
    if rng.random() < 0.5:
        steps = [("str", "userns", "/proc/self/ns/user")]   # no flag
    elif rng.random() < 0.5:
        steps = [("flag", "shift_uids", None),
                 ("str", "userns", "/proc/self/ns/user"),
                 ("str", "userns", "/proc/self/ns/user")]   # given twice
    return "userns combined/duplicated/no flag", steps


def g_wrong_type(rng):
    key = rng.choice(["uidmap", "gidmap", "userns", "source"])
    cmd = rng.choice(["fd", "fd", "binary", "path", "path_empty", "flag"])
    val = {"fd": rng.choice(["USERNSFD", "FILEFD", "PIPEFD"]),
           "binary": b"0:131072:65536", "path": "/proc/self/ns/user",
           "path_empty": "USERNSFD", "flag": None}[cmd]
    steps = [("flag", "shift_uids", None), ("flag", "shift_gids", None),
             (cmd, key, val)]
    if key != "uidmap":
        steps.insert(2, ("str", "uidmap", "0:0x20000:0x10000"))
    if key != "gidmap":
        steps.insert(2, ("str", "gidmap", "0:0x20000:0x10000"))
    if key == "source":
        steps.insert(0, ("nosource", None, None))
    return f"wrong param type ({cmd} for {key})", steps


def g_flag_with_value(rng):
    return "flag given a value", [("str", rng.choice(["shift_uids",
                                                     "shift_gids"]),
                                   rng.choice(["1", "yes", "0:1:1", ""]))]


def g_nul(rng):
    # embedded NULs: a blob through SET_BINARY (the parser wants a string)
    v = rng.choice([b"0:131072\x0065536", b"\x000:1:1", b"0:1:1\x00",
                    b"shift_uids\x00", b"0\x00:\x001\x00:1"])
    return "embedded NUL (binary)", [("flag", "shift_uids", None),
                                     ("binary", "uidmap", v)]


UNKNOWN = ["uidmaps", "uid_map", "shift_uid", "shiftuids", "map", "mode",
           "lowerdir", "upperdir", "idmap", "x", "uidmap ", " uidmap",
           "UIDMAP", "shift-uids", "userns_fd", "uidmap=0", "nouidmap",
           "gidmap\t", "shift_uids,shift_gids", "a" * 200]


def g_unknown(rng):
    return "unknown key", [("str" if rng.random() < 0.5 else "flag",
                            rng.choice(UNKNOWN), "1")]


def g_syscall_level(rng):
    """Rejected by fsconfig(2) itself: value > 256 chars, NULL value for
    SET_STRING, value for SET_FLAG, bad fd, SET_BINARY of 0 bytes, a
    missing SET_PATH path, an unknown command.  No fs log by design."""
    kind = rng.choice(["long", "nullstr", "flagval", "badfd", "bin0",
                       "nopath", "badcmd"])
    steps = {"long": [("str", "uidmap", "0:1:" + "1" * rng.randrange(300,
                                                                        5000))],
             "nullstr": [("str", "uidmap", None)],
             "flagval": [("rawflagval", "shift_uids", "x")],
             "badfd": [("fd", "userns", "BADFD")],
             "bin0": [("binary", "uidmap", b"")],
             "nopath": [("path", "userns", "/nonexistent/ns")],
             "badcmd": [("badcmd", "uidmap", "0:1:1")]}[kind]
    return f"fsconfig-level ({kind})", [("flag", "shift_uids", None)] + steps


def g_mount2(rng):
    """The same through mount(2)'s option string."""
    kind = rng.choice(["nul", "huge", "dupflag", "junk", "overflow",
                       "count0", "noflag"])
    if kind == "nul":
        data = b"shift_uids\x00,uidmap=0:131072:65536"
    elif kind == "huge":
        data = ("shift_uids," + ",".join(["uidmap=5:5:1"] * 400)).encode()
    elif kind == "dupflag":
        data = b"shift_uids,shift_uids,shift_gids"
    elif kind == "junk":
        data = bytes(rng.choice(b"0123456789:,x=abdgimpsu_")
                     for _ in range(rng.randrange(1, 600)))
        data = b"gidmap=1:1:1," + data        # gidmap without shift_gids
    elif kind == "overflow":
        data = f"shift_uids,uidmap=0:{U32 + rng.randrange(10**6)}:1".encode()
    elif kind == "count0":
        data = b"shift_gids,gidmap=0:0:0"
    else:
        data = b"uidmap=0:131072:65536"
    return f"mount(2) option string ({kind})", data


GENERATORS = [g_overflow, g_malformed, g_count0, g_wrap, g_u32max, g_overlap,
              g_many, g_map_no_flag, g_flag_no_map, g_missing_lower,
              g_userns_bad, g_userns_combo, g_wrong_type, g_flag_with_value,
              g_nul, g_unknown, g_syscall_level, g_mount2]
# the 340-extent lists are long: fewer of them
WEIGHTS = {g_many: 0.2}


def corpus(n):
    rng = random.Random(SEED)
    gens = []
    for g in GENERATORS:
        gens += [g] * (1 if g not in WEIGHTS else 0)
    out = []
    i = 0
    while len(out) < n:
        g = GENERATORS[i % len(GENERATORS)]
        i += 1
        if g in WEIGHTS and rng.random() > WEIGHTS[g]:
            continue
        out.append((g.__name__, g(rng)))
    return out


# --------------------------------------------------------------- runner

class Env:
    """fds and paths the cases refer to by placeholder."""

    def __init__(self, lower):
        self.lower = str(lower)
        self.userns_fd = os.open("/proc/self/ns/user", os.O_RDONLY)
        self.file_fd = os.open("/etc/passwd", os.O_RDONLY)
        self.pipe = os.pipe()
        self.net_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        self.dead = pid

    def close(self):
        for fd in (self.userns_fd, self.file_fd, self.net_fd, *self.pipe):
            os.close(fd)

    def fd(self, name):
        return {"USERNSFD": self.userns_fd, "FILEFD": self.file_fd,
                "PIPEFD": self.pipe[0], "BADFD": 987654}[name]

    def string(self, v):
        if v == "DEADPID":
            return f"/proc/{self.dead}/ns/user"
        if v == "PIPEFD":
            return f"/proc/self/fd/{self.pipe[0]}"
        if v == "NETFD":
            return f"/proc/self/fd/{self.net_fd}"
        return v


def fsconfig(fd, cmd, key, value, aux):
    r = libc.syscall(NR_fsconfig, fd, cmd, key, value, aux)
    return 0 if r == 0 else ctypes.get_errno()


def read_log(fd):
    out = []
    buf = ctypes.create_string_buffer(4096)
    while True:
        n = libc.read(fd, buf, 4096)
        if n <= 0:
            break
        out.append(buf.raw[:n].decode(errors="replace"))
    return out


def b(s):
    return None if s is None else os.fsencode(s)


def run_fsconfig_case(env, steps, source="LOWER"):
    """Run the steps then CMD_CREATE; returns (errnos per step, create
    errno, log messages, mounted?)."""
    fd = libc.syscall(NR_fsopen, b"shiftfs", 1)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    errs = []
    try:
        if source is not None and not any(s[0] == "nosource" for s in steps):
            src = env.lower if source == "LOWER" else source
            errs.append(fsconfig(fd, FSCONFIG_SET_STRING, b"source", b(src),
                                 0))
        for cmd, key, value in steps:
            k = b(key)
            if cmd == "nosource":
                continue
            if cmd == "flag":
                e = fsconfig(fd, FSCONFIG_SET_FLAG, k, None, 0)
            elif cmd == "rawflagval":
                e = fsconfig(fd, FSCONFIG_SET_FLAG, k, b(value), 0)
            elif cmd == "str":
                e = fsconfig(fd, FSCONFIG_SET_STRING, k,
                             b(env.string(value)), 0)
            elif cmd == "binary":
                buf = ctypes.create_string_buffer(value, max(len(value), 1))
                e = fsconfig(fd, FSCONFIG_SET_BINARY, k, buf, len(value))
            elif cmd == "fd":
                e = fsconfig(fd, FSCONFIG_SET_FD, k, None, env.fd(value))
            elif cmd == "path":
                e = fsconfig(fd, FSCONFIG_SET_PATH, k, b(value), AT_FDCWD)
            elif cmd == "path_empty":
                e = fsconfig(fd, FSCONFIG_SET_PATH_EMPTY, k, b"",
                             env.fd(value))
            elif cmd == "badcmd":
                e = fsconfig(fd, 77, k, b(value), 0)
            else:
                raise AssertionError(cmd)
            errs.append(e)
            if e:
                break
        # like mount(8), a caller stops at the first rejected parameter
        # (what an fs_context does with the parameters it did accept is
        # not bad input any more)
        create = -1 if any(errs) else \
            fsconfig(fd, FSCONFIG_CMD_CREATE, None, None, 0)
        mounted = False
        if create == 0:
            mfd = libc.syscall(NR_fsmount, fd, 1, 0)
            mounted = mfd >= 0
            if mounted:
                os.close(mfd)
        log = read_log(fd)
    finally:
        os.close(fd)
    return errs, create, log, mounted


def run_mount2_case(lower, target, data):
    buf = ctypes.create_string_buffer(data, len(data) + 1)
    r = libc.mount(os.fsencode(str(lower)), os.fsencode(str(target)),
                   b"shiftfs", ctypes.c_ulong(0), buf)
    e = 0 if r == 0 else ctypes.get_errno()
    if r == 0:
        libc.umount2(os.fsencode(str(target)), 2)
    return e


def slab_unreclaim_kb():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SUnreclaim:"):
            return int(line.split()[1])
    return 0


def shiftfs_mount_count():
    return sum(" - shiftfs " in ln for ln in
               Path("/proc/self/mountinfo").read_text().splitlines())


def test_bad_input_corpus(tmpfs_lower, mnt):
    cases = corpus(CORPUS_SIZE)
    assert len(cases) >= 1000
    env = Env(tmpfs_lower)
    mounts_before = shiftfs_mount_count()
    slab_before = slab_unreclaim_kb()
    fig = FIGURES["bad_input"]
    problems, lines, cats = [], [], {}
    try:
        for i, (gen, case) in enumerate(cases):
            cat = case[0]
            cats[cat] = cats.get(cat, 0) + 1
            fig["tried"] += 1
            if gen == "g_mount2":
                e = run_mount2_case(tmpfs_lower, mnt, case[1])
                lines.append(json.dumps({"i": i, "cat": cat,
                                         "mount_data": case[1].decode(
                                             "latin-1"), "errno": e}))
                fig["errnos"][errno.errorcode.get(e, str(e))] = \
                    fig["errnos"].get(errno.errorcode.get(e, str(e)), 0) + 1
                if e == 0:
                    problems.append(f"#{i} {cat}: mount(2) accepted "
                                    f"{case[1][:80]!r}")
                elif e != errno.EINVAL:
                    problems.append(f"#{i} {cat}: errno "
                                    f"{errno.errorcode.get(e, e)}")
                else:
                    fig["refused"] += 1
                continue
            steps = case[1]
            source = "LOWER"
            if gen == "g_missing_lower":
                source = case[2]
                if source is None:
                    source = None
            errs, create, log, mounted = run_fsconfig_case(env, steps,
                                                           source)
            failing = [e for e in errs if e] + ([create] if create > 0
                                                else [])
            first = failing[0] if failing else 0
            rec = {"i": i, "cat": cat,
                   "steps": [(c, k, v if not isinstance(v, bytes)
                              else v.decode("latin-1")) for c, k, v in
                             steps[:6]] + (["..."] if len(steps) > 6 else []),
                   "step_errnos": sorted(set(errs)), "create": create,
                   "log": log[:3]}
            lines.append(json.dumps(rec))
            name = errno.errorcode.get(first, str(first))
            fig["errnos"][name] = fig["errnos"].get(name, 0) + 1
            if mounted or create == 0:
                problems.append(f"#{i} {cat}: CMD_CREATE succeeded: {rec}")
                continue
            syscall_level = cat.startswith("fsconfig-level")
            allowed = {errno.EINVAL}
            if syscall_level:
                allowed |= {errno.EBADF, errno.ENOENT, errno.EOPNOTSUPP}
            bad = set(failing) - allowed
            if bad:
                problems.append(f"#{i} {cat}: errnos "
                                f"{[errno.errorcode.get(x, x) for x in bad]}"
                                f": {rec}")
                continue
            fig["refused"] += 1
            if log:
                fig["with_reason"] += 1
            elif not syscall_level:
                problems.append(f"#{i} {cat}: no reason in the fsconfig "
                                f"log: {rec}")
    finally:
        env.close()
        try:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "badinput-corpus.jsonl").write_text(
                "\n".join(lines) + "\n")
        except OSError:
            pass
    fig["categories"] = cats
    fig["slab_unreclaimable_delta_kb"] = slab_unreclaim_kb() - slab_before
    assert shiftfs_mount_count() == mounts_before, "a bad input mounted"
    assert not problems, f"{len(problems)} problems:\n" + \
        "\n".join(problems[:30])


def test_empty_source_is_refused(tmpfs_lower, mnt):
    """mount -t shiftfs -o ... "" TARGET must fail (spec: a lower dir
    that does not exist is EINVAL), not mount the caller's cwd."""
    FIGURES["bad_input"]["tried"] += 1
    cwd = os.getcwd()
    os.chdir(tmpfs_lower)
    try:
        r = libc.mount(b"", os.fsencode(str(mnt)), b"shiftfs",
                       ctypes.c_ulong(0),
                       b"shift_uids,uidmap=0:0x20000:0x10000")
        e = 0 if r == 0 else ctypes.get_errno()
        if r == 0:
            mounted_cwd = os.path.samestat(os.stat(tmpfs_lower),
                                           os.stat(mnt)) or \
                sorted(os.listdir(mnt)) == sorted(os.listdir(tmpfs_lower))
            libc.umount2(os.fsencode(str(mnt)), 2)
            pytest.fail(f"mount with source '' succeeded (lower = cwd: "
                        f"{mounted_cwd})")
        assert e == errno.EINVAL
    finally:
        os.chdir(cwd)
    FIGURES["bad_input"]["refused"] += 1
