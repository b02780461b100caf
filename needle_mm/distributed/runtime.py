"""Ray, imported on first use, and the errors of its tasks unwrapped."""

from __future__ import annotations

from ..errors import MissingDependencyError, NeedleError


def ray_module():
    """The ``ray`` module, started on this machine if no runtime is connected
    (``ray.init()`` with its defaults; call ``ray.init(address=...)`` first to use a cluster)."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("needle_mm.distributed runs on Ray: pip install 'needle_mm[ray]'") from None
    if not ray.is_initialized():
        ray.init()
    return ray


def raise_cause(error: BaseException) -> None:
    """If ``error`` is Ray's wrapper around a :class:`NeedleError` raised in a
    task or actor, raise that error itself (its message, not Ray's traceback)."""
    seen = 0
    cause = error
    while cause is not None and seen < 8:
        inner = getattr(cause, "cause", None)
        if isinstance(inner, NeedleError):
            raise inner.with_traceback(None) from None
        if isinstance(cause, NeedleError) and not type(cause).__module__.startswith("ray"):
            raise cause.with_traceback(None) from None
        cause = inner if isinstance(inner, BaseException) else cause.__cause__
        seen += 1
