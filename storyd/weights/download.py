"""Plain URL downloads for weights.lock ``url`` entries: streamed, hashed on the way, written atomically."""

from __future__ import annotations

import hashlib
from pathlib import Path

from storyd.errors import WeightsError
from storyd.fsutil import atomic_open
from storyd.progress import Progress

_CHUNK = 1 << 20
_HINT = "check the network connection and the entry's url in weights.lock"


def download_url(url: str, dest: Path, progress: Progress | None = None, *, timeout: float = 60.0) -> tuple[int, str]:
    """Stream ``url`` into ``dest`` (which appears only once complete); return its size and sha256."""
    import http.client
    import urllib.error
    import urllib.request

    label = f"download {Path(dest).name}"
    digest, done, total = hashlib.sha256(), 0, None
    request = urllib.request.Request(url, headers={"User-Agent": "storyd"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, atomic_open(dest, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress.update(label, done, total, unit="bytes")
            if total is not None and done != total:
                raise WeightsError(f"download of {url} stopped at {done} of {total} bytes", "run the command again")
    except urllib.error.URLError as exc:  # HTTPError included
        raise WeightsError(f"could not download {url}: {getattr(exc, 'reason', exc)}", _HINT) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise WeightsError(f"could not download {url}: {exc}", _HINT) from exc
    return done, digest.hexdigest()
