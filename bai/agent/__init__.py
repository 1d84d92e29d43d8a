"""The bai agent: runs kernels on one node and reports its resources to the manager."""
