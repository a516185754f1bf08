from shiftctl.vm import channel

N = "0123abcd"


def test_round_trip_with_noise_and_binary():
    body = b"\x00\x01SHIFTFS-END fake\n<xml/>"
    data = (b"garbage before\n" + channel.frame(N, "junit.xml", body)
            + channel.frame(N, "dmesg", b"") + channel.frame_exit(N, 0))
    res = channel.parse(data, N)
    assert res.files == {"junit.xml": body, "dmesg": b""}
    assert res.status == 0 and res.complete


def test_truncated_record_is_reported_not_trusted():
    whole = channel.frame(N, "dmesg", b"x" * 100)
    res = channel.parse(whole[:-30], N)
    assert res.truncated == ["dmesg"] and "dmesg" not in res.files
    assert res.status is None and not res.complete


def test_missing_exit_means_no_status():
    res = channel.parse(channel.frame(N, "a", b"1"), N)
    assert res.status is None


def test_foreign_nonce_cannot_forge_a_result():
    data = channel.frame_exit("deadbeef", 0) + channel.frame_exit(N, 3)
    res = channel.parse(data, N)
    assert res.status == 3 and res.foreign == 1
    assert channel.parse(channel.frame_exit("deadbeef", 0), N).status is None


def test_nonzero_status():
    assert channel.parse(channel.frame_exit(N, 137), N).status == 137
