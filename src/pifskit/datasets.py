"""Image data sets for training small denoisers (numpy only; nothing downloads).

Readers for MNIST / Fashion-MNIST IDX files (raw or ``.gz``), CIFAR-10 python batches, image folders and
scikit-learn's 8x8 digits, each returning an :class:`ImageDataset` of float32 ``(N, C, H, W)`` in [-1, 1]
(uint8 ``u`` -> ``u / 127.5 - 1``). Release files are checked against :data:`CHECKSUMS`; the data SPEC
grammar (:func:`parse_data_spec`) and the checksum policy: docs/torch.md#training-data.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ._validate import PifsError, check_choice

#: md5 sums of the official release files (archive and, for IDX, decompressed file); sources in
#: docs/torch.md#training-data.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "cifar10": {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
}

DATA_KINDS = ("digits", "mnist", "fashion-mnist", "cifar10", "folder")
SUBSETS = ("all", "train", "test")

# IDX type codes -> big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class ImageDataset:
    """Images ``(N, C, H, W)`` float32 in [-1, 1], optional integer labels ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray | None = None
    name: str = "images"
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        x = np.asarray(self.images)
        if x.ndim != 4:
            raise PifsError(f"images must be (N, C, H, W), got shape {x.shape}")
        if x.shape[0] < 1:
            raise PifsError(f"data set {self.name!r} is empty")
        self.images = np.ascontiguousarray(x, dtype=np.float32)
        if self.labels is not None:
            y = np.asarray(self.labels)
            if y.shape != (x.shape[0],):
                raise PifsError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
            self.labels = y.astype(np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    def rows(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(images flattened to float64 rows (N, C*H*W), labels): the form the exact models are fitted to."""
        return self.images.reshape(len(self), -1).astype(np.float64), self.labels

    def subset(self, index: np.ndarray, name: str | None = None) -> "ImageDataset":
        return ImageDataset(self.images[index], None if self.labels is None else self.labels[index],
                            name or self.name, dict(self.info))

    def split(self, holdout: float, seed: int = 0) -> tuple["ImageDataset", "ImageDataset | None"]:
        """Fixed train / held-out split: a permutation from ``default_rng(seed)``; the first
        ``round(holdout * N)`` indices are held out. ``holdout = 0`` returns (self, None)."""
        if not (0.0 <= holdout < 1.0):
            raise PifsError(f"holdout must lie in [0, 1), got {holdout}")
        n = len(self)
        n_hold = int(round(holdout * n))
        if n_hold == 0:
            return self, None
        if n - n_hold < 1:
            raise PifsError(f"holdout {holdout} leaves no training images out of {n}")
        perm = np.random.default_rng(seed).permutation(n)
        return (self.subset(np.sort(perm[n_hold:]), f"{self.name} (train split)"),
                self.subset(np.sort(perm[:n_hold]), f"{self.name} (held-out split)"))


def uint8_to_unit(u: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1]: ``u / 127.5 - 1``."""
    return (np.asarray(u, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


def md5_file(path: str | os.PathLike) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _verify(kind: str, path: Path, raw: bytes | None, verify: bool) -> None:
    """Check a release file against :data:`CHECKSUMS` (for ``X.gz``: the archive sum or the decompressed
    file's sum (``raw``) must match); files with unknown names pass."""
    table = CHECKSUMS.get(kind, {})
    name = path.name
    base = name[:-3] if name.endswith(".gz") else name
    want_file, want_raw = table.get(name), table.get(base) if name != base else None
    if not verify or (want_file is None and want_raw is None):
        return
    if want_file is not None and md5_file(path) == want_file:
        return
    if want_raw is not None and raw is not None and hashlib.md5(raw).hexdigest() == want_raw:
        return
    raise PifsError(f"{path}: md5 checksum does not match the official {kind} release file {name!r} "
                    "(corrupt or modified; re-download it, or pass --no-verify / verify=False to accept it)")


def _read_bytes(path: Path) -> bytes:
    """File content, decompressed if it ends in .gz; a bad or truncated archive raises PifsError."""
    if not path.is_file():
        raise PifsError(f"data file not found: {path}")
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PifsError(f"{path}: unreadable or truncated gzip file ({exc})") from None
    return data


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes: magic ``00 00 TYPE NDIM``, NDIM big-endian uint32 dims, then the values."""
    if len(data) < 4:
        raise PifsError(f"{source}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise PifsError(f"{source}: bad IDX magic number {data[:4].hex()} (expected 0000TTNN)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise PifsError(f"{source}: unknown IDX type code 0x{code:02x}; accepted: "
                        + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES))
    if ndim < 1:
        raise PifsError(f"{source}: IDX with 0 dimensions")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise PifsError(f"{source}: truncated IDX header")
    dims = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(data) - head
    if have < need:
        raise PifsError(f"{source}: truncated IDX data: dims {dims} need {need} bytes, file has {have}")
    if have > need:
        raise PifsError(f"{source}: {have - need} unexpected trailing bytes after IDX data of dims {dims}")
    return np.frombuffer(data, dtype=dtype, offset=head).reshape(dims)


def read_idx(path: str | os.PathLike, kind: str = "mnist", verify: bool = True) -> np.ndarray:
    """Read one IDX file (raw or .gz), verifying it if its name is a known release file."""
    p = Path(path)
    data = _read_bytes(p)
    _verify(kind, p, data, verify)
    return parse_idx(data, str(p))


def _find(root: Path, base: str) -> Path | None:
    return next((root / n for n in (base, base + ".gz") if (root / n).is_file()), None)


def load_mnist(root: str | os.PathLike, subset: str = "all", kind: str = "mnist",
               verify: bool = True) -> ImageDataset:
    """MNIST-format IDX pairs in ``root``: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    ``subset``: 'train', 'test' or 'all' (every pair present, train first).
    """
    check_choice(subset, "subset", SUBSETS)
    check_choice(kind, "IDX data set", ("mnist", "fashion-mnist"))
    root = Path(root)
    if not root.is_dir():
        raise PifsError(f"{kind} directory not found: {root}")
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[subset]
    xs, ys, used = [], [], []
    for pre in prefixes:
        ip, lp = _find(root, f"{pre}-images-idx3-ubyte"), _find(root, f"{pre}-labels-idx1-ubyte")
        if ip is None and lp is None:
            continue
        if ip is None or lp is None:
            raise PifsError(f"{root}: found only one of {pre}-images-idx3-ubyte / {pre}-labels-idx1-ubyte")
        x, y = read_idx(ip, kind, verify), read_idx(lp, kind, verify)
        if x.ndim != 3 or x.dtype != np.uint8:
            raise PifsError(f"{ip}: expected uint8 images of shape (N, H, W), got {x.dtype} {x.shape}")
        if y.ndim != 1 or y.dtype != np.uint8:
            raise PifsError(f"{lp}: expected uint8 labels of shape (N,), got {y.dtype} {y.shape}")
        if x.shape[0] != y.shape[0]:
            raise PifsError(f"{root}: {x.shape[0]} images but {y.shape[0]} labels in the {pre} pair")
        xs.append(x)
        ys.append(y)
        used.append(pre)
    if not xs:
        raise PifsError(f"{root}: no {kind} IDX files (expected e.g. t10k-images-idx3-ubyte.gz and "
                        "t10k-labels-idx1-ubyte.gz)")
    if len({x.shape[1:] for x in xs}) > 1:
        raise PifsError(f"{root}: train and test images differ in size")
    x = np.concatenate(xs)[:, None]
    return ImageDataset(uint8_to_unit(x), np.concatenate(ys), kind,
                        {"root": str(root), "files": used, "verified": verify})


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays (CIFAR batches need nothing else)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_cifar_batch(path: str | os.PathLike, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: dict with b'data' (N, 3072) uint8 and b'labels' (N) -> (N,3,32,32), (N,)."""
    p = Path(path)
    if not p.is_file():
        raise PifsError(f"CIFAR-10 batch not found: {p}")
    raw = p.read_bytes()
    _verify("cifar10", p, raw, verify)
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # truncated / corrupt pickles raise many types
        raise PifsError(f"{p}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict):
        raise PifsError(f"{p}: a CIFAR-10 batch must be a dict, got {type(d).__name__}")
    key = lambda k: d.get(k.encode(), d.get(k))  # noqa: E731  (py2 bytes keys or str keys)
    data, labels = key("data"), key("labels")
    if data is None or labels is None:
        raise PifsError(f"{p}: CIFAR-10 batch lacks b'data' or b'labels'")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise PifsError(f"{p}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise PifsError(f"{p}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise PifsError(f"{p}: CIFAR-10 labels must lie in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(root: str | os.PathLike, subset: str = "all", verify: bool = True) -> ImageDataset:
    """CIFAR-10 python batches in ``root`` (or ``root/cifar-10-batches-py``)."""
    check_choice(subset, "subset", SUBSETS)
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise PifsError(f"CIFAR-10 directory not found: {root}")
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    names["all"] = names["train"] + names["test"]
    present = [n for n in names[subset] if (root / n).is_file()]
    if not present:
        raise PifsError(f"{root}: no CIFAR-10 batches (expected data_batch_1..5 / test_batch)")
    xs, ys = zip(*(read_cifar_batch(root / n, verify) for n in present))
    return ImageDataset(uint8_to_unit(np.concatenate(xs)), np.concatenate(ys), "cifar10",
                        {"root": str(root), "files": present, "verified": verify})


_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_image_folder(root: str | os.PathLike, resolution: int | None = None,
                      channels: int | None = None) -> ImageDataset:
    """All images under ``root`` (recursively), centre-cropped to square and resized to ``resolution``.

    Sub-folder names become class labels (sorted); images directly in ``root`` get label -1
    unless all are there (then labels are None). ``channels``: 1 (grey), 3 (RGB) or None
    (1 if every image is greyscale, else 3).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with matplotlib
        raise PifsError("image folders need Pillow: pip install pillow") from None
    root = Path(root)
    if not root.is_dir():
        raise PifsError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_EXT)
    if not files:
        raise PifsError(f"{root}: no images ({', '.join(_IMAGE_EXT)})")
    if channels not in (None, 1, 3):
        raise PifsError(f"channels must be 1 or 3, got {channels}")
    imgs = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                imgs.append(im.copy())
        except Exception as exc:
            raise PifsError(f"{f}: unreadable image ({type(exc).__name__}: {exc})") from None
    if channels is None:
        channels = 1 if all(im.mode in ("L", "1", "I;16", "I") for im in imgs) else 3
    if resolution is None:
        sizes = {im.size for im in imgs}
        if len(sizes) != 1 or imgs[0].size[0] != imgs[0].size[1]:
            raise PifsError(f"{root}: images differ in size or are not square; give a resolution "
                            "(folder:PATH:RES)")
        resolution = imgs[0].size[0]
    if resolution < 2:
        raise PifsError(f"resolution must be >= 2, got {resolution}")
    out = np.empty((len(imgs), channels, resolution, resolution), np.uint8)
    for i, im in enumerate(imgs):
        im = im.convert("L" if channels == 1 else "RGB")
        w, h = im.size
        m = min(w, h)
        im = im.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m))
        if m != resolution:
            im = im.resize((resolution, resolution), Image.BICUBIC)
        a = np.asarray(im, dtype=np.uint8)
        out[i] = a[None] if channels == 1 else a.transpose(2, 0, 1)
    rel = [f.relative_to(root) for f in files]
    classes = sorted({r.parts[0] for r in rel if len(r.parts) > 1})
    labels = None
    if classes:
        idx = {c: k for k, c in enumerate(classes)}
        labels = np.array([idx[r.parts[0]] if len(r.parts) > 1 else -1 for r in rel], np.int64)
    return ImageDataset(uint8_to_unit(out), labels, f"folder {root.name}",
                        {"root": str(root), "classes": classes, "resolution": resolution})


def load_digits() -> ImageDataset:
    """scikit-learn's 8x8 digits (1797 images, values 0..16) scaled to [-1, 1]: ``x / 8 - 1``."""
    try:
        from sklearn.datasets import load_digits as _ld
    except ImportError:  # pragma: no cover - optional extra
        raise PifsError("the digits data set needs scikit-learn: pip install 'pifskit[data]'") from None
    d = _ld()
    x = (d.images.astype(np.float32) / np.float32(8.0) - np.float32(1.0))[:, None]
    return ImageDataset(x, d.target, "digits", {"source": "sklearn.datasets.load_digits"})


@dataclass(frozen=True)
class DataSpec:
    """A parsed data SPEC plus the fixed split: what a checkpoint records to reload its data."""

    kind: str
    path: str | None = None
    subset: str = "all"
    resolution: int | None = None
    holdout: float = 0.0
    split_seed: int = 0
    verify: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        try:
            return cls(**{f.name: d[f.name] for f in fields(cls)})
        except (KeyError, TypeError) as exc:
            raise PifsError(f"bad data spec record {d!r}: {exc}") from None

    def spec_string(self) -> str:
        if self.kind == "digits":
            return "digits"
        if self.kind == "folder":
            return f"folder:{self.path}" + (f":{self.resolution}" if self.resolution else "")
        return f"{self.kind}:{self.path}" + ("" if self.subset == "all" else f":{self.subset}")

    def load(self) -> tuple[ImageDataset, ImageDataset | None]:
        """(train split, held-out split or None)."""
        return load_dataset(self).split(self.holdout, self.split_seed)


def parse_data_spec(spec: str, holdout: float = 0.0, split_seed: int = 0, verify: bool = True) -> DataSpec:
    """``digits`` | ``mnist:DIR[:train|test|all]`` | ``fashion-mnist:DIR[...]`` | ``cifar10:DIR[...]``
    | ``folder:PATH[:RES]``."""
    if not isinstance(spec, str) or not spec:
        raise PifsError("data spec must be a non-empty string; accepted: digits, mnist:DIR, "
                        "fashion-mnist:DIR, cifar10:DIR, folder:PATH[:RES]")
    kind, _, rest = spec.partition(":")
    check_choice(kind, "data kind", DATA_KINDS)
    if not (0.0 <= float(holdout) < 1.0):
        raise PifsError(f"holdout must lie in [0, 1), got {holdout}")
    common = dict(holdout=float(holdout), split_seed=int(split_seed), verify=bool(verify))
    if kind == "digits":
        if rest:
            raise PifsError("'digits' takes no argument")
        return DataSpec("digits", **common)
    if not rest:
        raise PifsError(f"{kind} spec needs a path, e.g. {kind}:/data/{kind}")
    head, sep, tail = rest.rpartition(":")
    if kind == "folder":
        if sep and tail.isdigit():
            return DataSpec("folder", head, resolution=int(tail), **common)
        return DataSpec("folder", rest, **common)
    if sep and tail in SUBSETS:
        return DataSpec(kind, head, subset=tail, **common)
    return DataSpec(kind, rest, **common)


def load_dataset(spec: DataSpec | str) -> ImageDataset:
    """The whole data set a spec names (before the split)."""
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    if spec.kind == "digits":
        return load_digits()
    if spec.kind in ("mnist", "fashion-mnist"):
        return load_mnist(spec.path, spec.subset, spec.kind, spec.verify)
    if spec.kind == "cifar10":
        return load_cifar10(spec.path, spec.subset, spec.verify)
    return load_image_folder(spec.path, spec.resolution)
