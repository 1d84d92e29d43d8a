"""Dotfiles of users, projects and domains, and each user's stored bootstrap script.

:mod:`.rules` holds the pure rules (paths, modes, limits, precedence);
:mod:`.store` reads and changes them in the database and gives a starting
session's kernels their dotfiles.  The routes are :mod:`bai.manager.api.dotfiles`;
the agent writes the files (:mod:`bai.agent.dotfiles`).
"""
