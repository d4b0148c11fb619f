"""ReActNet's distribution loss: the student matches a frozen real-valued teacher's softmax.

Cross-entropy between the teacher's class distribution and the student's log-softmax,
temperature 1, no label term (AdamBNN/ReActNet recipe).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def distribution_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean over the batch of ``-sum_c softmax(teacher)_c * log_softmax(student)_c``.

    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> bool(distribution_loss(logits, logits) <= distribution_loss(-logits, logits))
    True
    """
    target = F.softmax(teacher_logits.detach(), dim=1)
    return -(target * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
