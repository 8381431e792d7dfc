"""NbdTargets, the --nbd-targets string as a model: what it accepts, and every refusal
naming its entry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.contract.node import StartRequest
from engine.contract.targets import BadTargets, NbdTarget, NbdTargets
from engine.errors import BadInput

SEED_BROKEN = "2000:nbd://127.0.0.1:10110/pgtest1-disk0,2000:nbd://127.0.0.1:10111/pgtest1-disk0"


def test_parses_host_port_export():
    t = NbdTargets.parse(
        "2000:nbd://127.0.0.1:10110/pgtest1-disk0,2001:nbd://hub.local:10111/x_1"
    ).by_key()
    assert t[2000] == NbdTarget(disk_key=2000, host="127.0.0.1", port=10110, export="pgtest1-disk0")
    assert t[2001].uri == "nbd://hub.local:10111/x_1"


def test_ipv6_host():
    assert NbdTargets.parse("2000:nbd://[::1]:10100/d").by_key()[2000].host == "[::1]"


def test_string_round_trip_keeps_the_order():
    text = "2001:nbd://h:2/b,2000:nbd://h:1/a"
    targets = NbdTargets.parse(text)
    assert str(targets) == text
    assert targets.keys() == [2001, 2000]
    assert [t.entry() for t in targets] == text.split(",")


def test_with_host_points_every_export_elsewhere():
    targets = NbdTargets.parse("2000:nbd://127.0.0.1:10110/a,2001:nbd://127.0.0.1:10111/b")
    moved = targets.with_host("127.0.0.2")
    assert str(moved) == "2000:nbd://127.0.0.2:10110/a,2001:nbd://127.0.0.2:10111/b"
    assert str(targets).count("127.0.0.1") == 2  # the original is unchanged
    assert str(targets.with_host("::1")) == "2000:nbd://[::1]:10110/a,2001:nbd://[::1]:10111/b"


def test_on_the_wire_it_is_the_seed_string():
    text = "2000:nbd://127.0.0.1:10110/pgtest1-disk2000-1"
    req = StartRequest.model_validate(
        {
            "vm_name": "pgtest1",
            "vcenter_host": "vc.local",
            "vcenter_user": "u",
            "vcenter_password": "pw",
            "vm_path": "/DC/vm/pgtest1",
            "nbd_targets": text,
            "job_id": "backup-pgtest1-1",
        }
    )
    assert req.nbd_targets.keys() == [2000]
    assert req.wire()["nbd_targets"] == text
    assert StartRequest.model_json_schema()["$defs"]["NbdTargets"]["type"] == "string"


def test_a_bad_string_in_a_request_is_refused_as_itself():
    with pytest.raises(BadTargets, match="disk key 2000 is given twice"):
        StartRequest.model_validate(
            {
                "vm_name": "pgtest1",
                "vcenter_host": "vc.local",
                "vcenter_user": "u",
                "vcenter_password": "pw",
                "vm_path": "/DC/vm/pgtest1",
                "nbd_targets": SEED_BROKEN,
                "job_id": "backup-pgtest1-1",
            }
        )


def test_seed_example_is_refused():
    with pytest.raises(BadInput, match="disk key 2000 is given twice"):
        NbdTargets.parse(SEED_BROKEN)


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
        NbdTargets.parse(text)


def test_two_keys_may_share_a_port_with_different_exports():
    assert len(NbdTargets.parse("2000:nbd://h:1/a,2001:nbd://h:1/b").targets) == 2


def test_key_not_a_disk_of_the_vm():
    t = NbdTargets.parse("2000:nbd://h:1/a,2002:nbd://h:2/b")
    with pytest.raises(BadInput, match="'2002:nbd://h:2/b': the VM has no disk with key 2002"):
        t.match_disks([2000, 2001])


def test_disk_without_target():
    t = NbdTargets.parse("2000:nbd://h:1/a")
    with pytest.raises(BadInput, match="disk 2001 of the VM has no nbd target"):
        t.match_disks([2000, 2001])


def test_matching_disks_pass():
    NbdTargets.parse("2000:nbd://h:1/a,2001:nbd://h:2/b").match_disks([2001, 2000])


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z0-9-]{1,8}){0,2}", fullmatch=True),
)
exports = st.from_regex(r"[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,20}", fullmatch=True)
target_lists = st.lists(
    st.builds(
        NbdTarget,
        disk_key=st.integers(0, 10**6),
        host=hosts,
        port=st.integers(1, 65535),
        export=exports,
    ),
    min_size=1,
    max_size=8,
    unique_by=(lambda t: t.disk_key, lambda t: (t.host, t.port, t.export)),
)


@given(target_lists)
def test_round_trip(targets: list[NbdTarget]):
    model = NbdTargets(targets=tuple(targets))
    parsed = NbdTargets.parse(str(model))
    assert list(parsed.targets) == targets
    assert parsed == model


@given(target_lists, st.data())
def test_duplicated_entry_is_refused(targets: list[NbdTarget], data: st.DataObject):
    dup = data.draw(st.sampled_from(targets))
    entries = [t.entry() for t in targets]
    entries.insert(data.draw(st.integers(0, len(entries))), dup.entry())
    with pytest.raises(BadInput, match=r"given twice|already the target"):
        NbdTargets.parse(",".join(entries))


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
        NbdTargets.parse(",".join(entries))
