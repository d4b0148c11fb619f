"""DVC stage entry points: ``python -m pipelines.<stage>``; see ``dvc.yaml``.

``import study`` first: it pins the CPU code path (``cpu_isa``) before a stage's imports load torch.
"""

import study  # noqa: F401
