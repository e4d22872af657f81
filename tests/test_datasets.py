"""Data readers on tiny generated files: IDX (raw/gz), CIFAR-10 batches, image folders, digits, specs."""

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest

from pifskit import PifsError
from pifskit import datasets as ds
from pifskit.datasets import (ImageDataset, load_cifar10, load_digits, load_image_folder, load_mnist,
                              parse_data_spec, parse_idx, read_idx, uint8_to_unit)


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + arr.astype(dt).tobytes()


def write_mnist(root, n=5, hw=6, prefix="t10k", gz=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, hw, hw), dtype=np.uint8)
    y = rng.integers(0, 10, n, dtype=np.uint8)
    for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
        data = idx_bytes(arr)
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return x, y


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_roundtrip(tmp_path, gz):
    x, y = write_mnist(tmp_path, gz=gz)
    d = load_mnist(tmp_path, verify=False)
    assert d.images.shape == (5, 1, 6, 6) and d.images.dtype == np.float32
    np.testing.assert_array_equal(d.labels, y)
    np.testing.assert_allclose(d.images[:, 0], x / 127.5 - 1.0, rtol=0, atol=1e-6)


def test_mnist_train_and_test_subsets(tmp_path):
    xt, _ = write_mnist(tmp_path, n=4, prefix="train", seed=1)
    xs, _ = write_mnist(tmp_path, n=3, prefix="t10k", seed=2)
    assert len(load_mnist(tmp_path, "all", verify=False)) == 7
    np.testing.assert_allclose(load_mnist(tmp_path, "test", verify=False).images[:, 0], uint8_to_unit(xs))
    np.testing.assert_allclose(load_mnist(tmp_path, "train", verify=False).images[:, 0], uint8_to_unit(xt))


def test_parse_idx_types_and_errors():
    a = np.arange(6, dtype=np.int16).reshape(2, 3) - 3
    np.testing.assert_array_equal(parse_idx(idx_bytes(a, 0x0B)), a)
    f = np.array([1.5, -2.25], dtype=np.float32)
    np.testing.assert_array_equal(parse_idx(idx_bytes(f, 0x0D)), f)
    good = idx_bytes(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(PifsError, match="magic"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(PifsError, match="type code"):
        parse_idx(good[:2] + b"\x07" + good[3:])
    with pytest.raises(PifsError, match="truncated IDX data"):
        parse_idx(good[:-1])
    with pytest.raises(PifsError, match="truncated IDX header"):
        parse_idx(good[:9])
    with pytest.raises(PifsError, match="trailing"):
        parse_idx(good + b"\x00")
    with pytest.raises(PifsError, match="too short"):
        parse_idx(b"\x00\x00")


def test_truncated_and_corrupt_gzip(tmp_path):
    write_mnist(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(PifsError, match="gzip"):
        load_mnist(tmp_path, verify=False)
    p.write_bytes(b"\x1f\x8b" + b"garbage" * 5)
    with pytest.raises(PifsError, match="gzip"):
        load_mnist(tmp_path, verify=False)


def test_mnist_structural_errors(tmp_path):
    with pytest.raises(PifsError, match="not found"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(PifsError, match="no mnist IDX files"):
        load_mnist(tmp_path)
    x, y = write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y[:4])))
    with pytest.raises(PifsError, match="5 images but 4 labels"):
        load_mnist(tmp_path, verify=False)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PifsError, match="only one of"):
        load_mnist(tmp_path, verify=False)


def test_checksum_verification(tmp_path, monkeypatch):
    # a tiny file named like the official release fails verification ...
    write_mnist(tmp_path)
    with pytest.raises(PifsError, match="md5 checksum"):
        load_mnist(tmp_path, verify=True)
    # ... and passes when the table holds its sum: the archive's, or the decompressed content's
    img = tmp_path / "t10k-images-idx3-ubyte.gz"
    lab = tmp_path / "t10k-labels-idx1-ubyte.gz"
    table = dict(ds.CHECKSUMS["mnist"])
    table["t10k-images-idx3-ubyte.gz"] = ds.md5_file(img)
    table["t10k-labels-idx1-ubyte"] = hashlib.md5(gzip.decompress(lab.read_bytes())).hexdigest()
    monkeypatch.setitem(ds.CHECKSUMS, "mnist", table)
    assert len(load_mnist(tmp_path, verify=True)) == 5
    # unknown file names are not checked
    assert read_idx(img.rename(tmp_path / "other.gz"), verify=True).shape == (5, 6, 6)


def test_official_checksum_table_is_well_formed():
    for kind, table in ds.CHECKSUMS.items():
        for name, md5 in table.items():
            assert len(md5) == 32 and int(md5, 16) >= 0, (kind, name)
    assert set(ds.CHECKSUMS["mnist"]) == set(ds.CHECKSUMS["fashion-mnist"])


def write_cifar(root, name="data_batch_1", n=4, seed=0, override=None):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"test", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         b"labels": [int(v) for v in rng.integers(0, 10, n)], b"filenames": [b"a.png"] * n}
    d.update(override or {})
    (root / name).write_bytes(pickle.dumps(d, protocol=2))
    return d


def test_cifar_roundtrip_and_errors(tmp_path):
    d1 = write_cifar(tmp_path, "data_batch_1", 4, 0)
    write_cifar(tmp_path, "test_batch", 3, 1)
    ds_all = load_cifar10(tmp_path, verify=False)
    assert ds_all.images.shape == (7, 3, 32, 32)
    np.testing.assert_allclose(ds_all.images[0], uint8_to_unit(d1[b"data"][0].reshape(3, 32, 32)))
    assert list(ds_all.labels[:4]) == d1[b"labels"]
    assert len(load_cifar10(tmp_path, "test", verify=False)) == 3
    # checksum: the real names carry official sums
    with pytest.raises(PifsError, match="md5"):
        load_cifar10(tmp_path, verify=True)
    # wrong shape, truncated pickle, missing keys, unsafe pickle
    write_cifar(tmp_path, "data_batch_1", 4, 0, {b"data": np.zeros((4, 100), np.uint8)})
    with pytest.raises(PifsError, match=r"\(N, 3072\)"):
        load_cifar10(tmp_path, verify=False)
    raw = pickle.dumps(d1, protocol=2)
    (tmp_path / "data_batch_1").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PifsError, match="not a readable"):
        load_cifar10(tmp_path, verify=False)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": d1[b"data"]}))
    with pytest.raises(PifsError, match="lacks"):
        load_cifar10(tmp_path, verify=False)

    class Evil:
        def __reduce__(self):
            import os
            return (os.getcwd, ())

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(PifsError, match="refusing"):
        load_cifar10(tmp_path, verify=False)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrs = {}
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for k in range(2):
            a = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / cls / f"{k}.png")
            arrs[(cls, k)] = a
    d = load_image_folder(tmp_path)
    assert d.images.shape == (4, 3, 12, 12)
    assert list(d.labels) == [0, 0, 1, 1]
    np.testing.assert_allclose(d.images[2], uint8_to_unit(arrs[("dog", 0)].transpose(2, 0, 1)))
    small = load_dataset_spec(f"folder:{tmp_path}:6")
    assert small.images.shape == (4, 3, 6, 6)
    # a non-square image of another size needs a resolution; then it is centre-cropped
    Image.fromarray(rng.integers(0, 256, (10, 20), dtype=np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(PifsError, match="resolution"):
        load_image_folder(tmp_path)
    d = load_image_folder(tmp_path, 8)
    assert d.images.shape == (5, 3, 8, 8) and d.labels[-1] == -1
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(PifsError, match="unreadable image"):
        load_image_folder(tmp_path, 8)


def load_dataset_spec(spec):
    return ds.load_dataset(parse_data_spec(spec))


def test_digits():
    d = load_digits()
    assert d.images.shape == (1797, 1, 8, 8)
    assert d.images.min() == -1.0 and d.images.max() == 1.0
    assert set(np.unique(d.labels)) == set(range(10))


def test_spec_parsing_and_split():
    assert parse_data_spec("digits").kind == "digits"
    s = parse_data_spec("mnist:/data/m:test", holdout=0.2, split_seed=3)
    assert (s.kind, s.path, s.subset, s.holdout, s.split_seed) == ("mnist", "/data/m", "test", 0.2, 3)
    assert parse_data_spec("fashion-mnist:/a/b").subset == "all"
    f = parse_data_spec("folder:/x/y:64")
    assert (f.path, f.resolution) == ("/x/y", 64)
    assert parse_data_spec(s.spec_string(), 0.2, 3) == s
    assert type(s).from_dict(s.to_dict()) == s
    for bad in ("", "imagenet:/x", "mnist", "digits:3"):
        with pytest.raises(PifsError):
            parse_data_spec(bad)
    with pytest.raises(PifsError):
        parse_data_spec("digits", holdout=1.0)
    d = ImageDataset(np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2), np.arange(10))
    tr, ho = d.split(0.3, seed=5)
    tr2, ho2 = d.split(0.3, seed=5)
    assert len(tr) == 7 and len(ho) == 3
    np.testing.assert_array_equal(ho.labels, ho2.labels)
    assert sorted(np.concatenate([tr.labels, ho.labels]).tolist()) == list(range(10))
    assert d.split(0.0)[1] is None
    with pytest.raises(PifsError):
        ImageDataset(np.zeros((0, 1, 2, 2)))


def test_uint8_scaling_endpoints():
    np.testing.assert_array_equal(uint8_to_unit(np.array([0, 255], np.uint8)), np.array([-1.0, 1.0], np.float32))
