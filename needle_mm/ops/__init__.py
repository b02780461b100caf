"""Operations on whole files: ``verify``, ``rebuild``/``compact``, ``export``, ``demo``.

    from needle_mm.ops import compact, rebuild, verify_file
"""

from .rebuild import compact, rebuild
from .verify import verify_file

__all__ = ["compact", "rebuild", "verify_file"]
