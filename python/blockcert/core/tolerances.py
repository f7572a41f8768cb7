"""TODO-DOC"""

from __future__ import annotations

# Relative replay tolerance per dtype: far above float rounding, far below any real disagreement.
REPLAY_RTOL = {"float32": 1e-5, "float64": 1e-12}


LOSS_ATOL = {"float32": 1e-4, "float64": 1e-10}
