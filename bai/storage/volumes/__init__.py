"""Volume backends of the storage proxy: the interface (:mod:`.base`) and ``vfs`` (:mod:`.vfs`)."""
