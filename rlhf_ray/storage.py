"""Storage roots: a local directory or any pyarrow filesystem URI, with atomic writes.

Every writer in rlhf-ray goes through here so that "nothing is half-written" holds on every
filesystem: bytes land at a temporary sibling path first and are renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_TEMP_MARKER = ".tmp-"


@dataclass(frozen=True)
class StorageRoot:
    """A filesystem plus a base path on it; `join` builds paths below the base."""

    fs: pafs.FileSystem
    base: str

    @classmethod
    def from_uri(cls, uri: str | os.PathLike[str]) -> StorageRoot:
        """Resolve `uri` (a plain path, `file://`, `s3://`, `gs://`, ...) to a filesystem and base path."""
        text = os.fspath(uri)
        if "://" not in text:
            return cls(pafs.LocalFileSystem(), os.path.abspath(text))
        fs, path = pafs.FileSystem.from_uri(text)
        return cls(fs, path.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def makedirs(self, *parts: str) -> str:
        path = self.join(*parts)
        self.fs.create_dir(path, recursive=True)
        return path

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.join(*parts)).type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.join(*parts)) as stream:
            return stream.read()

    def write_bytes_atomic(self, data: bytes, *parts: str) -> str:
        """Write `data` to a temporary sibling, then rename it onto the final path."""
        path = self.join(*parts)
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        temp_path = f"{parent}/{_TEMP_MARKER}{uuid.uuid4().hex}-{path.rsplit('/', 1)[1]}"
        try:
            with self.fs.open_output_stream(temp_path) as stream:
                stream.write(data)
            self.fs.move(temp_path, path)
        except BaseException:
            if self.fs.get_file_info(temp_path).type != pafs.FileType.NotFound:
                self.fs.delete_file(temp_path)
            raise
        return path

    def write_parquet_atomic(self, table: pa.Table, *parts: str) -> str:
        """Write `table` as one zstd Parquet file, atomically."""
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return self.write_bytes_atomic(sink.getvalue(), *parts)

    def list_files(self, *parts: str, suffixes: tuple[str, ...] = ()) -> list[str]:
        """All committed files below a folder, sorted, skipping temporaries and hidden files."""
        selector = pafs.FileSelector(self.join(*parts), recursive=True, allow_not_found=True)
        paths = []
        for info in self.fs.get_file_info(selector):
            name = info.base_name
            if info.type != pafs.FileType.File or name.startswith((".", "_")):
                continue
            if suffixes and not name.endswith(suffixes):
                continue
            paths.append(info.path)
        return sorted(paths)

    def relative(self, path: str) -> str:
        return path[len(self.base.rstrip("/")) + 1 :] if path.startswith(self.base) else path


def sha256_stream(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def digest_files(root: StorageRoot, paths: list[str]) -> str:
    """Content digest of a set of files: sha256 over (relative path, file sha256) pairs in path order.

    Two trees with the same bytes under the same relative names get the same digest, wherever they live.
    """
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(root.relative(path).encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(_read_all(root.fs, path)).digest())
    return digest.hexdigest()


def _read_all(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def swap_in_directory(staging: Path, target: Path) -> None:
    """Rename a fully written local `staging` directory onto `target`.

    POSIX `rename` cannot replace a non-empty directory, so an existing `target` is first moved aside to a
    hidden sibling, put back if the final rename fails, and deleted once the new one is in place.
    """
    retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    if target.exists():
        os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        if retired.exists():
            os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
