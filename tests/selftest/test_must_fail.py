"""Run only by `make vm-selfcheck`: proves a failing guest test fails the run."""


def test_deliberately_fails():
    assert 1 + 1 == 3, "this test exists to fail"
