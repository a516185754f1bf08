from shiftctl.vm import kernels


AVAILABLE = {
    "linux-image-6.1.0-9-amd64", "linux-headers-6.1.0-9-amd64",
    "linux-image-6.1.0-10-amd64", "linux-headers-6.1.0-10-amd64",
    # newest image has no headers package: must not be chosen
    "linux-image-6.1.0-11-amd64",
    "linux-image-6.1.0-10-cloud-amd64", "linux-headers-6.1.0-10-cloud-amd64",
    "linux-image-6.12.9+deb12-amd64", "linux-headers-6.12.9+deb12-amd64",
    "linux-image-6.12.118+deb12-amd64", "linux-headers-6.12.118+deb12-amd64",
    "linux-image-6.12.118+deb12-rt-amd64",
    "linux-image-7.2.13+deb14-amd64", "linux-headers-7.2.13+deb14-amd64",
    "linux-image-7.2.2+deb14-amd64", "linux-headers-7.2.2+deb14-amd64",
}


def test_newest_with_headers_numeric_order():
    assert kernels.resolve(kernels.KERNELS["6.1"], AVAILABLE) == \
        "linux-image-6.1.0-10-amd64"


def test_numeric_not_lexical():
    assert kernels.resolve(kernels.KERNELS["6.12"], AVAILABLE) == \
        "linux-image-6.12.118+deb12-amd64"
    assert kernels.resolve(kernels.KERNELS["7.2"], AVAILABLE) == \
        "linux-image-7.2.13+deb14-amd64"


def test_flavours_excluded_and_none_when_missing():
    assert kernels.resolve(kernels.KERNELS["6.1"], {
        "linux-image-6.1.0-10-cloud-amd64",
        "linux-headers-6.1.0-10-cloud-amd64"}) is None


def test_release_and_headers_names():
    k = kernels.KERNELS["7.2"]
    assert k.release_of("linux-image-7.2.13+deb14-amd64") == "7.2.13+deb14-amd64"
    assert k.headers_of("linux-image-7.2.13+deb14-amd64") == \
        "linux-headers-7.2.13+deb14-amd64"


def test_matrix_has_the_three_kernels():
    assert set(kernels.KERNELS) >= {"6.1", "6.12", "7.2"}
    assert kernels.KERNELS["7.2"].build_in == "sid"
    assert kernels.KERNELS["6.1"].build_in is None


def test_parse_depends():
    dep = ("linux-headers-6.1.0-57-common (= 6.1.192-3), linux-kbuild-6.1 "
           "(>= 6.1.192-3), linux-compiler-gcc-12-x86, a | b (>= 1)")
    assert kernels.parse_depends(dep) == [
        "linux-headers-6.1.0-57-common", "linux-kbuild-6.1",
        "linux-compiler-gcc-12-x86", "a"]
    assert not kernels.kernel_package("linux-compiler-gcc-12-x86")
    assert not kernels.kernel_package("linux-base")
    assert not kernels.kernel_package("gcc-16-for-host")
    assert kernels.kernel_package("linux-modules-7.2.13+deb14-amd64")


def test_unknown_kernel_is_a_clear_error():
    import pytest
    from shiftctl.errors import ShiftctlError
    with pytest.raises(ShiftctlError, match="unknown kernel '5.10'"):
        kernels.spec("5.10")
