"""Code execution back ends of the kernel runner.

* :mod:`~bai.kernel.runtimes.python` -- query mode for Python (a persistent
  namespace in a separate Python process, :mod:`._pyworker`);
* :mod:`~bai.kernel.runtimes.batch` -- shell commands: batch mode's clean,
  build and exec steps, and query mode for the ``shell`` runtime.
"""
