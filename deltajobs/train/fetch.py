"""Getting MNIST onto disk, on a login node: download it, or import IDX files already there.

Torch-free (stdlib only), so `deltajobs data fetch` runs where torch is not installed. The files end
up in torchvision's layout, `ROOT/MNIST/raw/train-images-idx3-ubyte` and friends, which is what
`deltajobs.train.data` reads. Every file is checked the same way: its IDX magic number, the count
in its header against its size, and the image count against the label count.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deltajobs.errors import DataError
from deltajobs.osutil import atomic_writer, write_atomic

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# file name -> md5 of its .gz on the mirrors (the same list torchvision checks)
MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
FILES = tuple(MD5)
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # uint8 data, 3 dims / 1 dim


def fetch_hint(root: Path | str) -> str:
    return (
        f"fetch it on a login node: `deltajobs data fetch mnist --root {root}` (downloads), "
        f"or `deltajobs data fetch mnist --root {root} --from DIR` (imports IDX files already on disk)"
    )


def raw_dir(root: Path | str) -> Path:
    return Path(root).expanduser() / "MNIST" / "raw"


@dataclass(frozen=True)
class IdxHeader:
    magic: int
    count: int
    shape: tuple[int, ...]  # per item: (28, 28) for images, () for labels


def find_file(directory: Path, name: str) -> Path | None:
    """`name` itself or `name.gz` in `directory`, plain first."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, root: Path | str | None = None) -> tuple[IdxHeader, bytes]:
    """The header and payload of an IDX file (plain or .gz), checked; DataError if corrupt."""
    hint = f"; {fetch_hint(root)}" if root is not None else ""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path} cannot be read ({err}){hint}") from None
    if len(data) < 8:
        raise DataError(f"{path} is truncated ({len(data)} bytes){hint}")
    magic, count = struct.unpack(">II", data[:8])
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        raise DataError(f"{path} is not an MNIST IDX file (magic {magic:#010x}){hint}")
    shape: tuple[int, ...] = ()
    offset = 8
    if magic == IMAGE_MAGIC:
        if len(data) < 16:
            raise DataError(f"{path} is truncated ({len(data)} bytes){hint}")
        shape = struct.unpack(">II", data[8:16])
        offset = 16
    item = shape[0] * shape[1] if shape else 1
    if len(data) != offset + count * item:
        raise DataError(
            f"{path} is corrupt: its header says {count} items ({offset + count * item} bytes), "
            f"the file has {len(data)} bytes{hint}"
        )
    return IdxHeader(magic, count, tuple(shape)), data[offset:]


def check_split(images: tuple[IdxHeader, bytes], labels: tuple[IdxHeader, bytes], name: str) -> None:
    (image_header, _), (label_header, payload) = images, labels
    if image_header.magic != IMAGE_MAGIC or label_header.magic != LABEL_MAGIC:
        raise DataError(f"MNIST {name}: the image and label files are swapped or of the wrong kind")
    if image_header.shape != (28, 28):
        raise DataError(f"MNIST {name}: images are {image_header.shape}, expected 28x28")
    if image_header.count != label_header.count:
        raise DataError(f"MNIST {name}: {image_header.count} images but {label_header.count} labels")
    if payload and max(payload) > 9:
        raise DataError(f"MNIST {name}: labels must be 0-9, found {max(payload)}")


def import_idx(source: Path, root: Path) -> dict[str, int]:
    """Check the four IDX files in `source` (plain or .gz) and copy them, plain, into root/MNIST/raw."""
    source = source.expanduser()
    if not source.is_dir():
        raise DataError(f"--from {source}: no such directory")
    for directory in (source, raw_dir(source), source / "raw"):  # accept a data root as well
        if all(find_file(directory, name) for name in FILES):
            source = directory
            break
    missing = [name for name in FILES if find_file(source, name) is None]
    if missing:
        raise DataError(f"--from {source}: missing {', '.join(missing)} (plain or .gz)")
    parsed = {name: read_idx(find_file(source, name)) for name in FILES}  # type: ignore[arg-type]
    for split, (images, labels) in SPLITS.items():
        check_split(parsed[images], parsed[labels], split)
    target = raw_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        src = find_file(source, name)
        assert src is not None
        opened = gzip.open(src, "rb") if src.suffix == ".gz" else src.open("rb")
        with opened as fin, atomic_writer(target / name, binary=True) as fout:
            shutil.copyfileobj(fin, fout)
    return {split: parsed[images][0].count for split, (images, _) in SPLITS.items()}


def download(root: Path, timeout: float = 30.0) -> dict[str, int]:
    """Download the four .gz files from the mirrors, check their md5, unpack into root/MNIST/raw."""
    target = raw_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (target / name).is_file():
            continue
        errors = []
        for mirror in MIRRORS:
            url = f"{mirror}{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    blob = response.read()
            except (urllib.error.URLError, OSError) as err:
                errors.append(f"{url}: {getattr(err, 'reason', err)}")
                continue
            if hashlib.md5(blob).hexdigest() != MD5[name]:
                errors.append(f"{url}: md5 mismatch")
                continue
            write_atomic(target / name, gzip.decompress(blob))
            break
        else:
            raise DataError(
                f"cannot download {name}.gz ({'; '.join(errors)}). Without internet access, copy the IDX "
                f"files here and run `deltajobs data fetch mnist --root {root} --from DIR`"
            )
    return verify(root)


def verify(root: Path | str) -> dict[str, int]:
    """Check root/MNIST/raw; return {"train": count, "test": count}."""
    counts = {}
    for split, (images, labels) in SPLITS.items():
        parsed = []
        for name in (images, labels):
            path = find_file(raw_dir(root), name)
            if path is None:
                raise DataError(f"MNIST not found: no {name} in {raw_dir(root)}; {fetch_hint(root)}")
            parsed.append(read_idx(path, root))
        check_split(parsed[0], parsed[1], split)
        counts[split] = parsed[0][0].count
    return counts
