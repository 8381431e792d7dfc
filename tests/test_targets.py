"""The --nbd-targets parser: what it accepts, and every refusal naming its entry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.contract.targets import NbdTarget, format_targets, match_disks, parse_targets
from engine.errors import BadInput

SEED_BROKEN = "2000:nbd://127.0.0.1:10110/pgtest1-disk0,2000:nbd://127.0.0.1:10111/pgtest1-disk0"


def test_parses_host_port_export():
    t = parse_targets("2000:nbd://127.0.0.1:10110/pgtest1-disk0,2001:nbd://hub.local:10111/x_1")
    assert t[2000] == NbdTarget(2000, "127.0.0.1", 10110, "pgtest1-disk0")
    assert t[2001].uri == "nbd://hub.local:10111/x_1"


def test_ipv6_host():
    assert parse_targets("2000:nbd://[::1]:10100/d")[2000].host == "[::1]"


def test_seed_example_is_refused():
    with pytest.raises(BadInput, match="disk key 2000 is given twice"):
        parse_targets(SEED_BROKEN)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("2000:nbd://127.0.0.1/d", "'2000:nbd://127.0.0.1/d' is malformed"),
        ("x:nbd://127.0.0.1:1/d", "'x:nbd://127.0.0.1:1/d' is malformed"),
        ("2000:http://127.0.0.1:1/d", "malformed"),
        ("2000:nbd://127.0.0.1:1/", "malformed"),
        ("2000:nbd://127.0.0.1:1/d,", "'' is malformed"),
        ("2000:nbd://127.0.0.1:0/d", "port 0 is out of range"),
        ("2000:nbd://127.0.0.1:65536/d", "'2000:nbd://127.0.0.1:65536/d': port 65536 is out"),
        ("2000:nbd://h:1/a,2000:nbd://h:2/b", "'2000:nbd://h:2/b': disk key 2000 is given twice"),
        ("2000:nbd://h:1/a,2001:nbd://H:1/a", "'2001:nbd://H:1/a': nbd://H:1/a is already"),
    ],
)
def test_refusals_name_the_entry(text: str, message: str):
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_targets(text)


def test_two_keys_may_share_a_port_with_different_exports():
    assert len(parse_targets("2000:nbd://h:1/a,2001:nbd://h:1/b")) == 2


def test_key_not_a_disk_of_the_vm():
    t = parse_targets("2000:nbd://h:1/a,2002:nbd://h:2/b")
    with pytest.raises(BadInput, match="'2002:nbd://h:2/b': the VM has no disk with key 2002"):
        match_disks(t, [2000, 2001])


def test_disk_without_target():
    t = parse_targets("2000:nbd://h:1/a")
    with pytest.raises(BadInput, match="disk 2001 of the VM has no nbd target"):
        match_disks(t, [2000, 2001])


def test_matching_disks_pass():
    match_disks(parse_targets("2000:nbd://h:1/a,2001:nbd://h:2/b"), [2001, 2000])


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z0-9-]{1,8}){0,2}", fullmatch=True),
)
exports = st.from_regex(r"[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,20}", fullmatch=True)
target_lists = st.lists(
    st.builds(NbdTarget, st.integers(0, 10**6), hosts, st.integers(1, 65535), exports),
    min_size=1,
    max_size=8,
    unique_by=(lambda t: t.disk_key, lambda t: (t.host, t.port, t.export)),
)


@given(target_lists)
def test_round_trip(targets: list[NbdTarget]):
    parsed = parse_targets(format_targets(targets))
    assert list(parsed.values()) == targets


@given(target_lists, st.data())
def test_duplicated_entry_is_refused(targets: list[NbdTarget], data: st.DataObject):
    dup = data.draw(st.sampled_from(targets))
    entries = [t.entry() for t in targets]
    entries.insert(data.draw(st.integers(0, len(entries))), dup.entry())
    with pytest.raises(BadInput, match=r"given twice|already the target"):
        parse_targets(",".join(entries))


@given(target_lists, st.data())
def test_mutated_entry_is_refused(targets: list[NbdTarget], data: st.DataObject):
    i = data.draw(st.integers(0, len(targets) - 1))
    t = targets[i]
    bad = data.draw(
        st.sampled_from(
            [
                f"{t.disk_key}:nbd://{t.host}/{t.export}",  # no port
                f"{t.disk_key}nbd://{t.host}:{t.port}/{t.export}",  # no colon after key
                f"{t.disk_key}:nbd://{t.host}:{t.port}",  # no export
                f"{t.disk_key}:nbd://{t.host}:{t.port + 65535}/{t.export}",  # port too big
                f"-{t.disk_key}:nbd://{t.host}:{t.port}/{t.export}",  # negative key
                f"{t.disk_key}:nbd://{t.host}:{t.port}/{t.export} x",  # trailing junk
            ]
        )
    )
    entries = [x.entry() for x in targets]
    entries[i] = bad
    with pytest.raises(BadInput, match=r"nbd target '.*'"):
        parse_targets(",".join(entries))
