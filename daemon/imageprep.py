"""Before sbatch: the image a job will use, copied to the user's cache when it lies on project
storage, with the copy's progress streamed to the waiting client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from islurm.config.settings import ContainerSettings
from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.imagecache import ImageCache, ImageError, default_dir, under_roots
from islurm.daemon.progress import note

if TYPE_CHECKING:
    from islurm.daemon.jobcontrol import Notify

log = structlog.get_logger("islurm.images")

PROGRESS_EVERY = 1.0  # seconds between copy progress lines


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


def cache_for(settings: ContainerSettings) -> ImageCache:
    return ImageCache(settings.cache_dir or default_dir(), settings.cache_limit)


async def prepare_image(settings: ContainerSettings, image: str, notify: Notify) -> str:
    """The path the job is given: the cached copy for images on project storage, else the
    image as configured. A missing, unreadable or unverifiable image fails here, fast."""
    if not image or not under_roots(image, settings.project_roots) or _is_dir(image):
        return image  # a rootfs directory is used in place
    cache = cache_for(settings)
    last = [0.0]
    token = trio.lowlevel.current_trio_token()

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY and done < total:
            return
        last[0] = now
        pct = 100 * done // max(total, 1)
        text = f"copying image {image} to the cache: {pct}% of {total / 2**20:.0f} MiB"
        trio.from_thread.run_sync(notify, "session.progress", note(text), trio_token=token)

    try:
        cached = await trio.to_thread.run_sync(cache.lookup, image)
        if cached is None:
            notify("session.progress", note(f"copying image {image} to {cache.root}"))
            cached = await trio.to_thread.run_sync(
                cache.fetch, image, progress, abandon_on_cancel=True
            )
            log.info("image.fetched", image=image, path=cached)  # copied, or by another daemon
    except ImageError as exc:
        raise RpcFault(Code.HOOK_FAILED, str(exc), {"image": image}) from None
    log.info("image.cached", image=image, path=cached)
    return cached
