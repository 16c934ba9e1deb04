"""What the CLI shows: transfer progress, and the summary ``inspect`` prints.

On a terminal each blob gets a rich progress bar (bytes, speed, time left);
otherwise each blob gets one plain line when it is done, so logs stay
readable. Both go to standard error: standard output carries the result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichBars

from cargohold.client.progress import BlobProgress
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.manifest import Manifest
from cargohold.manifest.base import ImageManifestBase
from cargohold.manifest.schema1 import SignedManifest

__all__ = ["PlainProgress", "RichProgress", "human_size", "inspect_summary", "short"]


def short(digest: Digest) -> str:
    """``sha256:0123456789ab``: enough to tell blobs apart on screen."""
    return f"{digest.algorithm}:{digest.encoded[:12]}"


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class _PlainBlob:
    def __init__(self, owner: PlainProgress, descriptor: Descriptor) -> None:
        self._owner = owner
        self._descriptor = descriptor
        self._started = time.monotonic()

    def advance(self, amount: int) -> None:
        pass

    def rewind(self, completed: int) -> None:
        self._owner.write(f"retrying {self._descriptor.digest} from byte {completed}")

    def finish(self, outcome: str) -> None:
        size = self._descriptor.size
        line = f"{outcome:<8} {self._descriptor.digest} {human_size(size)}"
        if outcome == "copied":
            seconds = max(time.monotonic() - self._started, 1e-6)
            line += f" in {seconds:.1f} s ({human_size(size / seconds)}/s)"
        self._owner.write(line)


class PlainProgress:
    """One line per blob when it is done."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def blob(self, descriptor: Descriptor) -> BlobProgress:
        return _PlainBlob(self, descriptor)

    def write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


class _RichBlob:
    def __init__(self, bars: RichBars, task: TaskID, descriptor: Descriptor) -> None:
        self._bars = bars
        self._task = task
        self._descriptor = descriptor

    def advance(self, amount: int) -> None:
        self._bars.update(self._task, advance=amount)

    def rewind(self, completed: int) -> None:
        self._bars.update(self._task, completed=completed)

    def finish(self, outcome: str) -> None:
        self._bars.update(
            self._task,
            completed=self._descriptor.size,
            description=f"{short(self._descriptor.digest)} {outcome}",
        )


class RichProgress:
    """A progress bar per blob, on a terminal; use it as a context manager."""

    def __init__(self, console: Console) -> None:
        self._bars = RichBars(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def blob(self, descriptor: Descriptor) -> BlobProgress:
        task = self._bars.add_task(short(descriptor.digest), total=descriptor.size)
        return _RichBlob(self._bars, task, descriptor)

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._bars.stop()


def inspect_summary(
    name: str | None,
    digest: Digest,
    media_type: str,
    manifest: Manifest,
    config: bytes | None,
    tags: Sequence[str] | None,
) -> dict[str, Any]:
    """What ``skopeo inspect`` prints, under its keys, plus the media type of ``digest``.

    ``manifest`` is the image described: the one ``digest`` names, or for an index the
    image of the platform asked for.
    """
    document: Mapping[str, Any] = {}
    if config is not None:
        try:
            loaded = json.loads(config)
        except ValueError:
            loaded = {}
        document = loaded if isinstance(loaded, dict) else {}
    container = document.get("config") or {}
    summary: dict[str, Any] = {}
    if name is not None:
        summary["Name"] = name
    summary.update(
        {
            "Digest": str(digest),
            "MediaType": media_type,
            "RepoTags": list(tags or []),
            "Created": document.get("created"),
            "DockerVersion": document.get("docker_version", ""),
            "Labels": container.get("Labels"),
            "Architecture": document.get("architecture", ""),
            "Os": document.get("os", ""),
        }
    )
    if document.get("variant"):
        summary["Variant"] = document["variant"]
    layers: list[Descriptor] = []
    if isinstance(manifest, ImageManifestBase):
        layers = manifest.layers
    elif isinstance(manifest, SignedManifest):
        layers = list(reversed(manifest.blobs()))
    summary["Layers"] = [str(layer.digest) for layer in layers]
    summary["LayersData"] = [
        {
            "MIMEType": layer.media_type,
            "Digest": str(layer.digest),
            "Size": layer.size,
            "Annotations": dict(layer.annotations) if layer.annotations else None,
        }
        for layer in layers
    ]
    summary["Env"] = container.get("Env")
    return summary
