"""The storage proxy's Prometheus metrics, computed at each scrape.

Served at ``GET /metrics`` on the manager-facing API, without the manager's
secret (scrapers send none; the page names volumes, never folders):

* ``bai_storage_volume_capacity_bytes{volume}``,
  ``bai_storage_volume_available_bytes{volume}``: the file system under the
  volume (``statvfs``);
* ``bai_storage_volume_folders{volume}``, ``bai_storage_volume_files{volume}``,
  ``bai_storage_volume_used_bytes{volume}``: what the proxy's own usage
  accounting counts in the volume's folders (as of its last scan);
* ``bai_storage_uploads{volume}``: upload sessions not yet finished.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from bai.storage.volumes import metric
from bai.storage.volumes.base import Volume

__all__ = ["storage_families"]


def _gauge(name: str, text: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=["volume"])


async def storage_families(volumes: Mapping[str, Volume]) -> list[Metric]:
    """The proxy's metric families now (module docs)."""
    capacity = _gauge("bai_storage_volume_capacity_bytes", "Size of the volume's file system.")
    available = _gauge(
        "bai_storage_volume_available_bytes", "Bytes the volume's file system can still take."
    )
    folders = _gauge("bai_storage_volume_folders", "Folders in the volume.")
    files = _gauge("bai_storage_volume_files", "Entries in the volume's folders.")
    used = _gauge("bai_storage_volume_used_bytes", "Bytes of files in the volume's folders.")
    uploads = _gauge("bai_storage_uploads", "Upload sessions not yet finished.")
    for name in sorted(volumes):
        volume = volumes[name]
        sample = await trio.to_thread.run_sync(metric.sample, volume.path, None)
        capacity.add_metric([name], sample.capacity_bytes)
        available.add_metric([name], sample.available_bytes)
        totals = volume.totals()
        folders.add_metric([name], totals.folders)
        files.add_metric([name], totals.files)
        used.add_metric([name], totals.used_bytes)
        uploads.add_metric([name], len(volume.uploads.sessions))
    return [capacity, available, folders, files, used, uploads]
