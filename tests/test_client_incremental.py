"""sendense-backup-client's incremental copy against the vcsim lab: a full of pgtest1, lab
writes, then ``--changed-since`` into overlays on the full; the chain must read exactly
as the lab's flat files, and the overlay hold only the changed chunks."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import xxhash

from engine.config import Settings
from engine.hub.exports.manager import ExportManager
from engine.node.copier import Extent
from engine.node.copier.digests import align_extents
from tests.fixtures.images import qcow2_map
from tests.fixtures.lab import Lab
from tests.test_client import BASE, Watched, lab_args, run_client, snapshots_of_pgtest1

KiB = 1024
MiB = 1024 * KiB


# -- refused before connecting -------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--changed-since", "2000"], "expected KEY=CHANGE_ID"),
        (["--changed-since", "disk=52 aa/3"], "expected KEY=CHANGE_ID"),
        (["--changed-since", "2000="], "expected KEY=CHANGE_ID"),
        (["--changed-since", "2000=" + "x" * 256], "expected KEY=CHANGE_ID"),
        (["--changed-since", "2000=a/1", "--changed-since", "2000=a/2"], "given twice"),
        (["--changed-since", "2001=a/1"], "disk 2001 has no --nbd-targets entry"),
        (["--changed-since", "2000=a/1", "--backup-type", "full"], "--backup-type full"),
        (["--backup-type", "incremental"], "needs --changed-since"),
    ],
)
def test_bad_changed_since_exits_2_in_one_line(flags: list[str], message: str) -> None:
    out = run_client(*BASE, "--nbd-targets", "2000:nbd://h:1/a", *flags)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: ") and "-changed-since" in out.stderr
    assert message in out.stderr


def test_change_id_with_spaces_slashes_and_equals_is_taken_whole() -> None:
    change_id = "52 9c 6d 8e 0a 4f 3f 6e-b0 9a 7c 2e 9d 6c 53 3a/17=x"
    out = run_client(
        *BASE, "--nbd-targets", "2000:nbd://h:1/a", "--changed-since", f"2000={change_id}"
    )
    assert out.returncode == 3, out.stderr  # past the flags: refused only by the dead vCenter


def test_a_disk_without_a_target_fails_naming_it(lab: Lab, tmp_path: Path) -> None:
    out = run_client(
        *lab_args(lab, "2000:nbd://127.0.0.1:1/a", "inc-missing", tmp_path / "l"),
        stdin=lab.password + "\n",
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == "error: disk 2001 of the VM has no nbd target"
    assert "sendense-inc-missing" not in snapshots_of_pgtest1(lab)


# -- against the lab -----------------------------------------------------------------


class Chain:
    """pgtest1's disks as qcow2 images, one export per disk per run."""

    def __init__(self, lab: Lab, manager: ExportManager, base: Path) -> None:
        self.lab = lab
        self.manager = manager
        self.base = base
        self.capacity = {d.key: d.capacity_bytes for d in lab.pgtest1.disks}

    def run(
        self, name: str, backing: str | None, *extra: str
    ) -> tuple[int, list[dict[str, Any]], dict[int, Path]]:
        """One client run into new images ``<name>-<key>.qcow2`` (overlays on
        ``<backing>-<key>.qcow2`` when given); its exit code, lines and images."""
        images, uris = {}, []
        for key, capacity in self.capacity.items():
            image = self.base / f"{name}-{key}.qcow2"
            parent = self.base / f"{backing}-{key}.qcow2" if backing else None
            self.manager.create_image(image, capacity, backing=parent)
            images[key] = image
            uris.append(f"{key}:{self.manager.start(f'{name}-{key}', image).uri}")
        log = self.base / f"{name}.log"
        run = Watched(lab_args(self.lab, ",".join(uris), name, log, *extra), self.lab.password)
        code = run.finish()
        for key in self.capacity:
            self.manager.stop(f"{name}-{key}")
        return code, run.lines, images


def of_type(lines: list[dict[str, Any]], kind: str) -> dict[int, dict[str, Any]]:
    return {line["disk_key"]: line for line in lines if line["type"] == kind}


def same_as_flat(flat: Path, image: Path) -> None:
    cmp = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(flat), str(image)],
        capture_output=True,
        text=True,
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def own_ranges(image: Path) -> list[Extent]:
    """What the overlay itself holds (data or zero clusters), neighbours merged."""
    out: list[Extent] = []
    for m in qcow2_map(image):
        if m["depth"] != 0:
            continue
        if out and out[-1].offset + out[-1].length == m["start"]:
            out[-1] = Extent(out[-1].offset, out[-1].length + m["length"])
        else:
            out.append(Extent(m["start"], m["length"]))
    return out


def digested(lines: list[dict[str, Any]], key: int, flat: Path) -> list[Extent]:
    """The chunks a disk sent digests for, each checked against the flat file."""
    data = flat.read_bytes()
    chunks: list[Extent] = []
    for line in lines:
        if line["type"] != "chunk_digests" or line["disk_key"] != key:
            continue
        size, raw = line["chunk_size"], base64.b64decode(line["digests"])
        for i in range(0, len(raw), 16):
            off = line["offset"] + i // 16 * size
            assert raw[i : i + 16] == xxhash.xxh3_128_digest(data[off : off + size]), off
            chunks.append(Extent(off, min(size, len(data) - off)))
    return align_extents(chunks, 1, len(data))  # merged


def set_parent_garbage(image: Path, offset: int, length: int) -> None:
    """Data in the parent where the source reads zero: whatever of the parent showed
    through an overlay there would read wrong."""
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {offset} {length}", str(image)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def chain(lab: Lab, export_manager: ExportManager, tmp_path: Path) -> Chain:
    return Chain(lab, export_manager, tmp_path)


@pytest.mark.slow
def test_incremental_copies_only_the_changed_chunks(chain: Chain, lab: Lab, settings: Settings):
    cap = chain.capacity[2000]
    data_then_zero = [(6 * MiB, 256 * KiB), (7 * MiB, 64 * KiB)]
    for offset, length in data_then_zero:
        lab.write("pgtest1", 2000, offset, length)
    code, lines, _ = chain.run("full", None)
    assert code == 0, lines[-2:]
    parent_ids = {k: d["change_id"] for k, d in of_type(lines, "disk_done").items()}
    writes = [
        (1 * MiB, 64 * KiB),  # one whole chunk
        (2 * MiB - 100, 200),  # across a chunk boundary
        (5 * MiB + 3 * KiB, 10 * KiB),  # inside a chunk
        (cap - 1, 1),  # the disk's last byte
    ]
    for offset, length in writes:
        lab.write("pgtest1", 2000, offset, length)
    zeroes = [(6 * MiB, 256 * KiB), (7 * MiB + 4 * KiB, 8 * KiB)]  # whole chunks, part of one
    for offset, length in zeroes:
        lab.write("pgtest1", 2000, offset, length, zero=True)
    changed = align_extents(
        [Extent(o, n) for o, n in writes + zeroes], settings.copier.chunk_size, cap
    )

    since = [f for k, cid in parent_ids.items() for f in ("--changed-since", f"{k}={cid}")]
    code, lines, inc = chain.run("inc", "full", *since)
    assert code == 0, lines[-2:]

    started = of_type(lines, "disk_started")
    assert started[2000] == {
        **started[2000],
        "mode": "incremental",
        "bytes_total": sum(e.length for e in changed),
        "capacity_bytes": cap,
        "fallback": None,
    }
    assert started[2001] == {**started[2001], "mode": "incremental", "bytes_total": 0}
    done = of_type(lines, "disk_done")
    assert done[2000]["change_id"] not in (None, parent_ids[2000])
    assert done[2000]["bytes_done"] == sum(e.length for e in changed)
    assert own_ranges(inc[2000]) == changed
    assert own_ranges(inc[2001]) == []
    assert digested(lines, 2000, lab.pgtest1.flat[2000]) == changed
    assert digested(lines, 2001, lab.pgtest1.flat[2001]) == []
    for key, image in inc.items():
        same_as_flat(lab.pgtest1.flat[key], image)
    assert not any(s.startswith("sendense-") for s in snapshots_of_pgtest1(lab))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        ("reset", "change tracking was reset"),
        ("unknown", "vCenter refused change id"),  # the lab's FileFault, as ESX's
    ],
)
def test_an_unusable_change_id_falls_back_to_a_whole_copy_over_the_parent(
    chain: Chain, lab: Lab, cause: str, reason: str
):
    hole = 4 * MiB
    lab.write("pgtest1", 2000, hole, MiB, zero=True)
    code, lines, full = chain.run("full", None)
    assert code == 0, lines[-2:]
    parent_ids = {k: d["change_id"] for k, d in of_type(lines, "disk_done").items()}
    flat = lab.pgtest1.flat[2000]
    set_parent_garbage(full[2000], hole, MiB)
    if cause == "reset":
        lab.reset_tracking("pgtest1", 2000)
    else:  # a sequence number from the future: the disk's epoch, an id it never gave
        uuid, seq = parent_ids[2000].rsplit("/", 1)
        parent_ids[2000] = f"{uuid}/{int(seq) + 1000}"
    lab.write("pgtest1", 2000, hole + MiB // 2, 4 * KiB)

    since = [f for k, cid in parent_ids.items() for f in ("--changed-since", f"{k}={cid}")]
    code, lines, inc = chain.run("fb", "full", *since)
    assert code == 0, lines[-2:]

    started = of_type(lines, "disk_started")
    cap = chain.capacity[2000]
    assert started[2000] == {
        **started[2000],
        "mode": "full",
        "bytes_total": cap,
        "capacity_bytes": cap,
    }
    assert reason in started[2000]["fallback"]
    assert started[2001]["mode"] == "incremental" and started[2001]["fallback"] is None
    assert own_ranges(inc[2000]) == [Extent(0, cap)]  # every block its own, holes as zeroes
    assert digested(lines, 2000, flat) == [Extent(0, cap)]
    for key, image in inc.items():
        same_as_flat(lab.pgtest1.flat[key], image)
    log = (chain.base / "fb.log").read_text()
    assert f"copied whole, not incremental: disk 2000: {reason}" in log
