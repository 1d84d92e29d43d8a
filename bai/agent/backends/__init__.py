"""Kernel backends: the interface (:mod:`.base`) and the local process backend (:mod:`.local`)."""
