"""The storage proxy: vfolder volumes behind a manager-facing and a client-facing HTTP API.

See :mod:`bai.common.storage_api` for the contract and :mod:`bai.storage.server`
for the service; ``bai storage-proxy`` runs it as a daemon.
"""
