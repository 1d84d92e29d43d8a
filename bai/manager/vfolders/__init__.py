"""Virtual folders on the manager's side: access rules and the storage proxies' client.

:mod:`~.proxies` calls the storage proxies (:mod:`bai.common.storage_api`).
:mod:`~.access` decides who reaches which folder at which level
(``find_folder``), on the pure rules of :mod:`~.rules` (names, permissions,
grants, quotas, counts) and :mod:`~.hosts` (``allowed_vfolder_hosts``);
:mod:`~.lifecycle` creates, renames, trashes, restores, purges, clones and
re-owns folders, :mod:`~.sharing` handles invitations, shares and grants,
:mod:`~.mounts` resolves a new session's mounts and finds the sessions that
mount a folder; :mod:`~.errors` has their errors.
This package sits below :mod:`bai.manager.api`: it never imports the API.
"""
