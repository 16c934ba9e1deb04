"""An OCI image layout on disk as a ``registry.Repository``.

The layout (OCI image specification, ``image-layout.md``)::

    oci-layout      {"imageLayoutVersion": "1.0.0"}
    index.json      an image index; entries carry org.opencontainers.image.ref.name = tag
    blobs/<alg>/<hex>

Blobs and manifests are files under ``blobs/``; a tag is an ``index.json``
entry with the ``org.opencontainers.image.ref.name`` annotation, as skopeo and
umoci write them. Every file appears by rename: a blob only once its content
matched its digest, ``index.json`` only whole. An upload in progress is a
hidden file ``blobs/.upload-<id>`` until it is committed or cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import DEFAULT_ALGORITHM, Digest, Digester, Verifier, digest_of
from cargohold.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    OperationUnsupported,
    RangeInvalid,
    SizeInvalid,
)
from cargohold.manifest import OCI_INDEX, media_type_of, parse_manifest
from cargohold.registry import BlobSource, StoredManifest

__all__ = ["REF_NAME", "OciLayout"]

#: The annotation that names a tag in ``index.json``.
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
READ_CHUNK = 1 << 20
_UPLOAD_PREFIX = ".upload-"


def _write_atomically(path: Path, content: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class OciLayout:
    """The OCI image layout at ``path`` (implements ``registry.Repository``).

    Reading needs an existing layout (``NameUnknown`` otherwise); the first
    write creates one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._blobs = LayoutBlobStore(self)
        self._manifests = LayoutManifestService(self)
        self._tags = LayoutTagService(self)
        # index.json is read, changed and replaced whole: one change at a time.
        self._index_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def blobs(self) -> LayoutBlobStore:
        return self._blobs

    @property
    def manifests(self) -> LayoutManifestService:
        return self._manifests

    @property
    def tags(self) -> LayoutTagService:
        return self._tags

    def __repr__(self) -> str:
        return f"OciLayout({str(self.path)!r})"

    # -- the layout's files --------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.path / LAYOUT_FILE).is_file()

    def require(self) -> None:
        if not self.exists():
            raise NameUnknown(f"{self.path} is not an OCI image layout (no {LAYOUT_FILE})")

    def create(self) -> None:
        """Make the layout's skeleton if it is not there yet."""
        (self.path / "blobs").mkdir(parents=True, exist_ok=True)
        if not (self.path / LAYOUT_FILE).exists():
            _write_atomically(self.path / LAYOUT_FILE, json.dumps(LAYOUT_VERSION).encode())
        if not (self.path / "index.json").exists():
            self._write_index([])

    def blob_path(self, digest: Digest) -> Path:
        return self.path / "blobs" / digest.algorithm / digest.encoded

    def read_index(self) -> list[dict[str, Any]]:
        """The ``manifests`` of ``index.json``."""
        self.require()
        try:
            document = json.loads((self.path / "index.json").read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise ManifestInvalid(f"{self.path}/index.json is not JSON: {exc}") from None
        entries = document.get("manifests") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ManifestInvalid(f"{self.path}/index.json has no manifests list")
        return [entry for entry in entries if isinstance(entry, dict)]

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        _write_atomically(self.path / "index.json", json.dumps(document).encode())

    async def set_entry(self, descriptor: Descriptor, tag: str | None) -> None:
        """Point ``tag`` at ``descriptor`` in ``index.json``; no tag adds an untagged entry."""
        async with self._index_lock:
            self.create()
            entries = self.read_index()
            entry = descriptor.to_json()
            if tag is None:
                if any(
                    _ref_name(e) is None and e.get("digest") == entry["digest"] for e in entries
                ):
                    return
            else:
                entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: tag}
                entries = [e for e in entries if _ref_name(e) != tag]
            entries.append(entry)
            self._write_index(entries)

    async def remove_entries(self, *, tag: str | None = None, digest: Digest | None = None) -> int:
        """Drop the entries of ``tag``, or of ``digest``; how many went."""
        async with self._index_lock:
            entries = self.read_index()
            kept = [
                e
                for e in entries
                if not (
                    (tag is not None and _ref_name(e) == tag)
                    or (digest is not None and e.get("digest") == digest)
                )
            ]
            if len(kept) != len(entries):
                self._write_index(kept)
            return len(entries) - len(kept)

    def only_entry(self) -> Digest:
        """The digest of the layout's single image (for ``oci:PATH`` without a tag)."""
        entries = self.read_index()
        if len(entries) != 1:
            raise ManifestUnknown(
                f"{self.path} holds {len(entries)} images: name one with oci:PATH:TAG"
            )
        return Digest.parse(str(entries[0].get("digest", "")))

    async def referrers(
        self, subject: Digest, artifact_type: str | None = None
    ) -> list[Descriptor]:
        found = []
        for entry in self.read_index():
            try:
                digest = Digest.parse(str(entry.get("digest", "")))
                manifest = parse_manifest(self.blob_path(digest).read_bytes(), None)
            except (OSError, DigestInvalid, ManifestInvalid):
                continue
            if manifest.subject is None or manifest.subject.digest != subject:
                continue
            descriptor = manifest.descriptor(digest.algorithm)
            if artifact_type is None or descriptor.artifact_type == artifact_type:
                found.append(descriptor)
        return sorted({d.digest: d for d in found}.values(), key=lambda d: str(d.digest))


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    if isinstance(annotations, dict):
        name = annotations.get(REF_NAME)
        return name if isinstance(name, str) else None
    return None


class LayoutBlobStore:
    """The blobs of an OCI layout (implements ``registry.BlobStore``)."""

    def __init__(self, layout: OciLayout) -> None:
        self._layout = layout

    async def stat(self, digest: Digest) -> Descriptor:
        digest = Digest.parse(digest)
        try:
            size = self._layout.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobUnknown(digest) from None
        return Descriptor(OCTET_STREAM, digest, size)

    async def exists(self, digest: Digest) -> bool:
        return self._layout.blob_path(Digest.parse(digest)).is_file()

    async def get(self, digest: Digest) -> bytes:
        digest = Digest.parse(digest)
        try:
            content = self._layout.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobUnknown(digest) from None
        if digest_of(content, digest.algorithm) != digest:
            raise DigestInvalid(f"blob {digest} in {self._layout.path} does not match its digest")
        return content

    async def open(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        digest = Digest.parse(digest)
        try:
            file = self._layout.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise BlobUnknown(digest) from None
        size = os.fstat(file.fileno()).st_size
        if offset < 0 or offset > size or (length is not None and length < 0):
            file.close()
            raise RangeInvalid(f"offset {offset} is outside blob {digest} of {size} bytes")
        whole = offset == 0 and length is None
        return _read(file, offset, length, Verifier(digest) if whole else None, digest)

    async def put(self, content: bytes, media_type: str = OCTET_STREAM) -> Descriptor:
        digest = digest_of(content)
        self._layout.create()
        path = self._layout.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _write_atomically(path, content)
        return Descriptor(media_type, digest, len(content))

    async def delete(self, digest: Digest) -> None:
        digest = Digest.parse(digest)
        try:
            self._layout.blob_path(digest).unlink()
        except FileNotFoundError:
            raise BlobUnknown(digest) from None

    async def mount(self, source: str, digest: Digest) -> Descriptor:
        raise OperationUnsupported("an OCI layout cannot mount blobs")

    async def create_upload(self, algorithm: str = DEFAULT_ALGORITHM) -> LayoutBlobWriter:
        digester = Digester(algorithm)
        self._layout.create()
        upload_id = str(uuid.uuid4())
        path = self._layout.path / "blobs" / f"{_UPLOAD_PREFIX}{upload_id}"
        return LayoutBlobWriter(self._layout, upload_id, path.open("xb"), digester)

    async def resume_upload(self, upload_id: str) -> LayoutBlobWriter:
        if not upload_id or not all(c.isalnum() or c == "-" for c in upload_id):
            raise BlobUploadUnknown(f"no upload {upload_id[:64]!r}")
        path = self._layout.path / "blobs" / f"{_UPLOAD_PREFIX}{upload_id}"
        try:
            file = path.open("r+b")
        except FileNotFoundError:
            raise BlobUploadUnknown(f"no upload {upload_id!r}") from None
        file.seek(0, os.SEEK_END)
        return LayoutBlobWriter(self._layout, upload_id, file, None)

    async def locate(
        self, digest: Digest, *, redirect: str | None = None, client: str | None = None
    ) -> BlobSource:
        descriptor = await self.stat(digest)
        return BlobSource(descriptor, file=str(self._layout.blob_path(descriptor.digest)))


async def _read(
    file: BinaryIO, offset: int, length: int | None, verifier: Verifier | None, digest: Digest
) -> AsyncIterator[bytes]:
    with file:
        file.seek(offset)
        remaining = length
        held: bytes | None = None
        while remaining is None or remaining > 0:
            chunk = file.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            if verifier is None:
                yield chunk
                continue
            # The last chunk waits for the digest check, as the remote store's does.
            verifier.update(chunk)
            if held is not None:
                yield held
            held = chunk
        if verifier is not None and not verifier.verified():
            raise DigestInvalid(f"blob {digest} on disk does not match its digest")
        if held is not None:
            yield held


class LayoutBlobWriter:
    """An upload into an OCI layout: a hidden file, renamed into ``blobs/`` once verified."""

    def __init__(
        self, layout: OciLayout, upload_id: str, file: BinaryIO, digester: Digester | None
    ) -> None:
        self._layout = layout
        self._id = upload_id
        self._file = file
        self._digester = digester
        self._started_at = datetime.now(UTC).replace(microsecond=0)

    @property
    def id(self) -> str:
        return self._id

    @property
    def started_at(self) -> datetime:
        return self._started_at

    @property
    def size(self) -> int:
        return self._file.tell()

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        written = self._file.write(data)
        if self._digester is not None:
            self._digester.update(data)
        return written

    async def close(self) -> None:
        self._file.close()

    async def cancel(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file.name)

    async def commit(self, expected: Digest, size: int | None = None) -> Descriptor:
        expected = Digest.parse(expected)
        try:
            actual_size = self.size
            if size is not None and size != actual_size:
                raise SizeInvalid(f"declared size {size} but received {actual_size} bytes")
            self._file.flush()
            actual = self._digest(expected.algorithm)
            if actual != expected:
                raise DigestInvalid(
                    f"provided digest {expected} did not match uploaded content {actual}",
                    {"expected": str(expected), "actual": str(actual)},
                )
            self._file.close()
            target = self._layout.blob_path(expected)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._file.name, target)
            return Descriptor(OCTET_STREAM, expected, actual_size)
        except BaseException:
            await self.cancel()
            raise

    def _digest(self, algorithm: str) -> Digest:
        digester = self._digester
        if digester is None or digester.algorithm != algorithm:
            digester = Digester(algorithm)
            with open(self._file.name, "rb") as again:
                while chunk := again.read(READ_CHUNK):
                    digester.update(chunk)
        return digester.digest()


class LayoutManifestService:
    """Manifests of an OCI layout: blobs, tagged through ``index.json``."""

    def __init__(self, layout: OciLayout) -> None:
        self._layout = layout

    async def exists(self, digest: Digest) -> bool:
        return self._layout.blob_path(Digest.parse(digest)).is_file()

    async def get(self, digest: Digest) -> StoredManifest:
        digest = Digest.parse(digest)
        try:
            payload = await self._layout.blobs.get(digest)
        except BlobUnknown:
            raise ManifestUnknown(f"manifest {digest} unknown", {"digest": digest}) from None
        manifest = parse_manifest(payload, media_type_of(payload))
        subject = manifest.subject.digest if manifest.subject is not None else None
        return StoredManifest(digest, manifest.media_type, payload, subject)

    async def put(
        self,
        payload: bytes,
        content_type: str | None,
        tags: Sequence[str] = (),
        digest: Digest | None = None,
    ) -> StoredManifest:
        manifest = parse_manifest(payload, content_type)
        algorithm = digest.algorithm if digest is not None else DEFAULT_ALGORITHM
        actual = digest_of(payload, algorithm)
        if digest is not None and actual != digest:
            raise DigestInvalid(f"manifest digest {actual} does not match {digest}")
        self._layout.create()
        path = self._layout.blob_path(actual)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _write_atomically(path, payload)
        descriptor = Descriptor(manifest.media_type, actual, len(payload))
        for tag in tags:
            await self._layout.set_entry(descriptor, tag)
        subject = manifest.subject.digest if manifest.subject is not None else None
        return StoredManifest(actual, manifest.media_type, payload, subject)

    async def delete(self, digest: Digest) -> list[str]:
        digest = Digest.parse(digest)
        try:
            self._layout.blob_path(digest).unlink()
        except FileNotFoundError:
            raise ManifestUnknown(f"manifest {digest} unknown", {"digest": digest}) from None
        await self._layout.remove_entries(digest=digest)
        return []  # its index entries, named or not, went with it


class LayoutTagService:
    """Tags of an OCI layout: ``index.json`` entries with a ref name."""

    def __init__(self, layout: OciLayout) -> None:
        self._layout = layout

    async def get(self, tag: str) -> Digest:
        for entry in self._layout.read_index():
            if _ref_name(entry) == tag:
                return Digest.parse(str(entry.get("digest", "")))
        raise ManifestUnknown(f"unknown tag {tag!r}", {"tag": tag})

    async def tag(self, tag: str, digest: Digest) -> None:
        manifest = await self._layout.manifests.get(digest)
        descriptor = Descriptor(manifest.media_type, manifest.digest, len(manifest.payload))
        await self._layout.set_entry(descriptor, tag)

    async def untag(self, tag: str) -> None:
        self._layout.require()
        if not await self._layout.remove_entries(tag=tag):
            raise ManifestUnknown(f"unknown tag {tag!r}", {"tag": tag})

    async def all(self) -> list[str]:
        names = {_ref_name(entry) for entry in self._layout.read_index()}
        return sorted(name for name in names if name is not None)

    async def lookup(self, digest: Digest) -> list[str]:
        return sorted(
            name
            for entry in self._layout.read_index()
            if entry.get("digest") == digest and (name := _ref_name(entry)) is not None
        )
