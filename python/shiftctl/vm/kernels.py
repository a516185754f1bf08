"""The kernel matrix: the one place that says which Debian kernels we test.

Adding a kernel is one entry in KERNELS.  An entry names the Debian suites
its packages come from, a regular expression for the image package (one
group: the part that orders versions), and how its module is built: on the
host, or in a cached debootstrap chroot of a suite whose compiler and glibc
the headers need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEBIAN_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"

# suite name -> mirror base URL
SUITES: dict[str, str] = {
    "bookworm": DEBIAN_MIRROR,
    "bookworm-updates": DEBIAN_MIRROR,
    "bookworm-security": SECURITY_MIRROR,
    "trixie": DEBIAN_MIRROR,
    "sid": DEBIAN_MIRROR,
}


@dataclass(frozen=True)
class KernelSpec:
    name: str                    # matrix key: "6.1"
    suites: tuple[str, ...]      # apt suites the packages come from
    image_re: str                # full-match regex for the image package name
    build_in: str | None = None  # None: host gcc; else a suite for a chroot
    make_vars: tuple[str, ...] = field(default_factory=tuple)

    def release_of(self, image_pkg: str) -> str:
        """linux-image-6.1.0-57-amd64 -> 6.1.0-57-amd64 (the uname -r)."""
        return image_pkg.removeprefix("linux-image-")

    def headers_of(self, image_pkg: str) -> str:
        return "linux-headers-" + self.release_of(image_pkg)


KERNELS: dict[str, KernelSpec] = {
    "6.1": KernelSpec(
        name="6.1",
        suites=("bookworm", "bookworm-security"),
        image_re=r"linux-image-6\.1\.0-(\d+)-amd64",
    ),
    "6.12": KernelSpec(
        name="6.12",
        suites=("bookworm", "bookworm-security"),
        image_re=r"linux-image-6\.12\.(\d+)\+deb12-amd64",
        # bookworm has no pahole: skip BTF generation for our module
        make_vars=("CONFIG_DEBUG_INFO_BTF_MODULES=",),
    ),
    "7.2": KernelSpec(
        name="7.2",
        suites=("sid",),
        image_re=r"linux-image-7\.2\.(\d+)\+deb14-amd64",
        build_in="sid",
        make_vars=("CONFIG_DEBUG_INFO_BTF_MODULES=",),
    ),
}

DEFAULT_KERNELS = ("6.1",)

# Kernels built here, not fetched: a matrix kernel's linux-source with
# KASAN, lockdep, kmemleak and DEBUG_LIST (debugkernel.py).  Not in the
# default matrix.  name -> the matrix kernel whose source it is built from.
DEBUG_KERNELS: dict[str, str] = {"6.1-debug": "6.1"}


def is_debug(name: str) -> bool:
    return name in DEBUG_KERNELS


def guest_memory(name: str) -> str:
    """QEMU -m for a kernel's guest: KASAN's shadow needs more."""
    return "8G" if is_debug(name) else "4G"


def boot_params(name: str) -> str:
    """Extra kernel command line for a kernel's guest.

    A debug kernel runs with 4-level paging: under `-cpu max` a 6.1 kernel
    uses LA57, and while identify_cpu() refills the boot CPU's capability
    words LA57 reads as off, so an interrupt in that window makes KASAN
    judge a 5-level direct-map address by 4-level bounds and report a
    wild-memory-access that is not there.
    """
    return "no5lvl" if is_debug(name) else ""


def spec(name: str) -> KernelSpec:
    if name in DEBUG_KERNELS:
        base = KERNELS[DEBUG_KERNELS[name]]
        # built with the host's gcc like its base; nothing to resolve
        return KernelSpec(name=name, suites=base.suites, image_re="(?!)")
    try:
        return KERNELS[name]
    except KeyError:
        known = ", ".join([*KERNELS, *DEBUG_KERNELS])
        from shiftctl.errors import ShiftctlError

        raise ShiftctlError(f"unknown kernel {name!r} (known: {known})") from None


def _order_key(m: re.Match[str]) -> tuple[int, ...]:
    return tuple(int(g) for g in m.groups())


def resolve(kspec: KernelSpec, available: set[str]) -> str | None:
    """Pick the newest image package whose headers package also exists.

    `available` is the set of package names the configured suites offer.
    Returns the image package name, or None when nothing matches.
    """
    pattern = re.compile(kspec.image_re)
    best: tuple[tuple[int, ...], str] | None = None
    for name in available:
        m = pattern.fullmatch(name)
        if not m or kspec.headers_of(name) not in available:
            continue
        key = _order_key(m)
        if best is None or key > best[0]:
            best = (key, name)
    return best[1] if best else None


def parse_depends(field_value: str) -> list[str]:
    """Package names of a Depends field, first alternative, no versions."""
    names = []
    for part in field_value.split(","):
        alt = part.split("|")[0].strip()
        if not alt:
            continue
        names.append(alt.split()[0].split(":")[0])
    return names


def kernel_package(name: str) -> bool:
    """Whether a dependency is part of the kernel we unpack (not tooling)."""
    if name in ("linux-base",) or name.startswith("linux-compiler-"):
        return False
    return name.startswith("linux-")
