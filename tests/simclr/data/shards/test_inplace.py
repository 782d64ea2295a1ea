"""WebDataset shards indexed where they are (simclr/data/shards/inplace.py): real ShardWriter, GNU tar and
tarfile output, read-only inputs, each kind of damage named, and the loader reading them as webdataset does."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from simclr.data.errors import BadSampleError, DataError
from simclr.data.loading.loader import ShardLoader
from simclr.data.shards.inplace import SKIPPED_NAME, expand_inputs, index_webdataset, read_class_map, scan_tar
from simclr.data.shards.manifest import Manifest
from simclr.data.shards.shardset import check_present, open_split

_RNG = np.random.default_rng(0)


def _jpeg(h: int = 12, w: int = 10, gray: bool = False) -> bytes:
    shape = (h, w) if gray else (h, w, 3)
    buf = io.BytesIO()
    Image.fromarray(_RNG.integers(0, 255, shape, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _shardwriter_set(folder: Path, n: int = 40, per_shard: int = 16) -> list[Path]:
    """``n`` samples by webdataset's own ShardWriter: keys with dots in a folder part, labels i % 4."""
    folder.mkdir(parents=True)
    with wds.ShardWriter(str(folder / "train-%06d.tar"), maxcount=per_shard, verbose=0) as w:
        for i in range(n):
            w.write({"__key__": f"v1.2/s{i:04d}", "jpg": _jpeg(), "cls": i % 4})
    return sorted(folder.glob("*.tar"))


def _webdataset_samples(tars: list[Path]) -> dict[str, tuple[bytes, int]]:
    out = {}
    for s in wds.WebDataset([str(t) for t in tars], shardshuffle=False):
        out[s["__key__"]] = (s["jpg"], int(s["cls"]))
    return out


def _ours(root: Path, split: str = "train") -> dict[str, tuple[bytes, int]]:
    s = open_split(root, split)
    return {k: (s.read(i), int(s.labels[i])) for i, k in enumerate(s.keys)}


def test_shardwriter_output_reads_as_webdataset_yields_it(tmp_path: Path) -> None:
    tars = _shardwriter_set(tmp_path / "in")
    m = index_webdataset(tars, tmp_path / "root", split="train", num_classes=4)
    assert m.num_samples == 40 and len(m.shards) == 3 and m.label_counts == [10] * 4
    assert [Path(s.path or "") for s in m.shards] == tars and all(s.sha256 == "" for s in m.shards)
    assert _ours(tmp_path / "root") == _webdataset_samples(tars)
    assert check_present(tmp_path / "root", "train").num_samples == 40
    # The loader: every sample once per epoch, in its own order, labels as webdataset's.
    want = _webdataset_samples(tars)
    ld = ShardLoader(tmp_path / "root", "train", batch_size=8, mode="eval", size=8)
    seen = {k: int(lab) for b in ld.epoch_iter(0) for k, lab, ok in zip(b["key"], b["label"], b["valid"]) if ok}
    assert seen == {k: lab for k, (_, lab) in want.items()}


def _tree(folder: Path, long: bool, n: int = 12) -> Path:
    """Files for tar: a folder name with a dot (past ustar's 100 characters if ``long``), jpg + cls per sample."""
    sub = folder / ("a.b/" + ("long" * 30 if long else "s"))
    sub.mkdir(parents=True)
    for i in range(n):
        (sub / f"img{i:03d}.jpg").write_bytes(_jpeg(gray=i % 2 == 0))
        (sub / f"img{i:03d}.cls").write_text(str(i % 3))
    return folder


@pytest.mark.parametrize("fmt", ["gnu", "ustar", "pax", "py-gnu", "py-pax", "py-ustar"])
def test_gnu_tar_and_tarfile_headers(tmp_path: Path, fmt: str) -> None:
    files = _tree(tmp_path / "files", long=not fmt.endswith("ustar"))  # ustar holds no long name
    tar = tmp_path / "in" / "data.tar"
    tar.parent.mkdir()
    names = sorted(str(p.relative_to(files)) for p in files.rglob("*") if p.is_file())
    if fmt.startswith("py-"):
        py_fmt = {"py-gnu": tarfile.GNU_FORMAT, "py-pax": tarfile.PAX_FORMAT, "py-ustar": tarfile.USTAR_FORMAT}[fmt]
        with tarfile.open(tar, "w", format=py_fmt) as t:
            for n in names:
                t.add(files / n, arcname=n)
    else:
        subprocess.run(["tar", f"--format={fmt}", "-cf", str(tar), "-C", str(files), *names], check=True)
    index_webdataset([tar], tmp_path / "root", split="train", num_classes=3)
    assert _ours(tmp_path / "root") == _webdataset_samples([tar]) and len(_ours(tmp_path / "root")) >= 12
    m = Manifest.load(tmp_path / "root" / "train")
    assert m.image_mode == "RGB" and sum(m.label_counts) == m.num_samples  # gray and colour: decoded as RGB


def test_read_only_tars_are_read_and_nothing_is_written_beside_them(tmp_path: Path) -> None:
    tars = _shardwriter_set(tmp_path / "in")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tars}
    for p in tars:
        p.chmod(0o444)
    (tmp_path / "in").chmod(0o555)
    try:
        index_webdataset(tars, tmp_path / "root", split="train", num_classes=4)
        assert sorted(p.name for p in (tmp_path / "in").iterdir()) == sorted(before)
        assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tars} == before
        assert len(_ours(tmp_path / "root")) == 40
        with pytest.raises(DataError, match="folder of the input tars"):
            index_webdataset(tars, tmp_path, split="in", num_classes=4)
    finally:
        (tmp_path / "in").chmod(0o755)


def _nothing_written(root: Path) -> bool:
    return not (root / "train").exists() or not any((root / "train").iterdir())


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as t:
        return t.getmembers()


def test_a_truncated_tar_is_named_with_key_and_offset(tmp_path: Path) -> None:
    tars = _shardwriter_set(tmp_path / "in")
    first, last = _members(tars[1])[0], _members(tars[1])[-3]  # the image of the second shard's last but one sample (cls, jpg each)
    data = tars[1].read_bytes()
    tars[1].write_bytes(data[: last.offset_data + 100])
    with pytest.raises(BadSampleError, match=rf"truncated tar.*byte offset {last.offset}.*train-000001\.tar.*"
                                             r"key 'v1\.2/s0030'"):
        index_webdataset(tars, tmp_path / "root", split="train", num_classes=4)
    assert _nothing_written(tmp_path / "root")
    # Cut exactly after a member: no end-of-archive block, so the last sample may have lost members.
    tars[1].write_bytes(data[: first.offset_data + 512 * ((first.size + 511) // 512)])
    with pytest.raises(BadSampleError, match=r"no end-of-archive block.*key 'v1\.2/s0016'"):
        index_webdataset(tars, tmp_path / "root", split="train", num_classes=4)


def test_a_corrupt_header_is_named(tmp_path: Path) -> None:
    tars = _shardwriter_set(tmp_path / "in")
    m = _members(tars[0])[4]
    data = bytearray(tars[0].read_bytes())
    data[m.offset : m.offset + 100] = b"\x07" * 100  # the name field: the checksum no longer holds
    tars[0].write_bytes(bytes(data))
    with pytest.raises(BadSampleError, match=rf"corrupt tar header.*byte offset {m.offset}.*train-000000\.tar"):
        index_webdataset(tars, tmp_path / "root", split="train", num_classes=4)
    assert _nothing_written(tmp_path / "root")
    tars[0].write_bytes(b"not a tar at all" * 100)
    with pytest.raises(BadSampleError, match="train-000000.tar"):
        index_webdataset(tars, tmp_path / "root", split="train", num_classes=4)


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path


def test_missing_image_duplicate_key_and_label_out_of_range_are_named_or_skipped(tmp_path: Path) -> None:
    a = _write_tar(tmp_path / "in" / "a.tar", [("k0.jpg", _jpeg()), ("k0.cls", b"0"), ("k1.cls", b"1"),
                                               ("k2.png", _png()), ("k2.cls", b"7")])
    b = _write_tar(tmp_path / "in" / "b.tar", [("k0.jpg", _jpeg()), ("k3.jpg", _jpeg()), ("__meta__", b"x"),
                                               ("k4.webp", _webp())])
    root = tmp_path / "root"
    with pytest.raises(BadSampleError, match=r"no image member.*a\.tar.*key 'k1'"):
        index_webdataset([a, b], root, split="train", num_classes=3)
    a = _write_tar(tmp_path / "in" / "a.tar", [("k0.jpg", _jpeg()), ("k0.cls", b"0"), ("k2.png", _png()),
                                               ("k2.cls", b"7")])
    with pytest.raises(BadSampleError, match=r"duplicate key \(also in a\.tar\).*b\.tar.*key 'k0'"):
        index_webdataset([a, b], root, split="train", num_classes=3)
    with pytest.raises(BadSampleError, match=r"label 7 outside the 3 classes.*a\.tar.*key 'k2'"):
        index_webdataset([a], root, split="train", num_classes=3)
    assert _nothing_written(root)
    a = _write_tar(tmp_path / "in" / "a.tar", [("k0.jpg", _jpeg()), ("k0.cls", b"0"), ("k1.cls", b"1"),
                                               ("k2.png", _png()), ("k2.cls", b"7")])
    m = index_webdataset([a, b], root, split="train", num_classes=3, skip_bad=True)
    assert m.num_samples == 3 and m.source["skipped"] == 3  # k1 no image, k2 label, b's k0 duplicate
    assert m.num_unlabelled == 2 and m.image_format == "mixed"  # k3, k4 have no cls
    listed = (root / "train" / SKIPPED_NAME).read_text().splitlines()[1:]
    assert sorted(line.split("\t")[1] for line in listed) == ["k0", "k1", "k2"]
    assert sorted(_ours(root)) == ["k0", "k3", "k4"]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (5, 7)).save(buf, format="PNG")
    return buf.getvalue()


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (10, 20, 30)).save(buf, format="WEBP")
    return buf.getvalue()


def test_labels_from_a_json_field_through_a_class_map(tmp_path: Path) -> None:
    names = tmp_path / "synsets.txt"
    names.write_text("n01\nn02\nn03\n")
    assert read_class_map(names) == ["n01", "n02", "n03"]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("n02 1\nn01 0\n")
    assert read_class_map(pairs) == ["n01", "n02"]
    tar = _write_tar(tmp_path / "in" / "x.tar", [
        ("a.jpg", _jpeg()), ("a.json", json.dumps({"label": "n03"}).encode()),
        ("b.jpg", _jpeg()), ("b.json", json.dumps({"label": 1}).encode()),
        ("c.jpg", _jpeg()), ("c.json", b"{}")])
    with pytest.raises(BadSampleError, match=r"no field 'label'.*key 'c'"):
        index_webdataset([tar], tmp_path / "root", split="train", label_field="label",
                         class_names=read_class_map(names))
    m = index_webdataset([tar], tmp_path / "root", split="train", label_field="label",
                         class_names=read_class_map(names), skip_bad=True)
    assert m.class_names == ["n01", "n02", "n03"] and m.label_counts == [0, 1, 1]
    with pytest.raises(BadSampleError, match=r"'n03'.*needs --class-map"):
        index_webdataset([tar], tmp_path / "root2", split="train", label_field="label")


def test_inputs_as_brace_pattern_folder_or_list(tmp_path: Path) -> None:
    tars = _shardwriter_set(tmp_path / "in")
    assert expand_inputs(str(tmp_path / "in" / "train-{000000..000002}.tar")) == tars
    assert expand_inputs(tmp_path / "in") == tars
    listing = tmp_path / "in" / "list.txt"
    listing.write_text("".join(f"{p.name}\n" for p in tars))
    assert expand_inputs(listing) == tars
    with pytest.raises(DataError, match=r"1 of 4 input tars do not exist"):
        expand_inputs(str(tmp_path / "in" / "train-{000000..000003}.tar"))


def test_scan_reads_headers_not_image_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexing reads each tar's headers and a small prefix of each image, not the images."""
    big = np.asarray(Image.fromarray(_RNG.integers(0, 255, (400, 400, 3), dtype=np.uint8)))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="JPEG", quality=95)
    tar = _write_tar(tmp_path / "in" / "x.tar", [(f"k{i}.jpg", buf.getvalue()) for i in range(5)])
    members, fault, _ = scan_tar(tar)
    assert fault is None and len(members) == 5
    read = 0
    real_open = open

    class Counting(io.FileIO):
        def read(self, n: int = -1) -> bytes:  # type: ignore[override]
            nonlocal read
            out = super().read(n)
            read += len(out)
            return out

    def counting_open(path: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if str(path) == str(tar) and "b" in mode:
            return io.BufferedReader(Counting(str(path), "r"), buffer_size=512)
        return real_open(path, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", counting_open)
    index_webdataset([tar], tmp_path / "root", split="train")
    assert read < tar.stat().st_size / 5, (read, tar.stat().st_size)


def test_an_in_place_manifest_round_trips_and_our_own_keeps_its_bytes(tmp_path: Path) -> None:
    tars = _shardwriter_set(tmp_path / "in")
    m = index_webdataset(tars, tmp_path / "root", split="train", num_classes=4)
    assert Manifest.load(tmp_path / "root" / "train") == m
    raw = json.loads((tmp_path / "root" / "train" / "manifest.json").read_text())
    assert raw["shards"][0]["path"] == str(tars[0])
    own = m.__class__(**{**m.__dict__, "shards": [s.__class__(**{**s.__dict__, "path": None}) for s in m.shards]})
    assert '"path"' not in own.to_json()


def test_a_moved_tar_is_a_missing_shard(tmp_path: Path) -> None:
    tars = _shardwriter_set(tmp_path / "in")
    index_webdataset(tars, tmp_path / "root", split="train", num_classes=4)
    os.rename(tars[2], tmp_path / "elsewhere.tar")
    with pytest.raises(DataError, match=r"missing shard.*train-000002\.tar"):
        check_present(tmp_path / "root", "train")
    assert stat.S_ISREG((tmp_path / "elsewhere.tar").stat().st_mode)
