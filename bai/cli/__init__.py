"""The ``bai`` command line."""
