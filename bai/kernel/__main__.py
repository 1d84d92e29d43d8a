"""``python -m bai.kernel``: run the kernel runner (see :mod:`bai.kernel.runner`)."""

from bai.kernel.runner import main

raise SystemExit(main())
