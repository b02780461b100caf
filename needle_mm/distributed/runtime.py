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


def needle_cause(error: BaseException) -> NeedleError | None:
    """The :class:`NeedleError` a task or actor raised, inside Ray's wrapper
    (``RayTaskError.cause``, or the chain of causes), else None."""
    cause: BaseException | None = error
    for _ in range(8):  # Ray nests a wrapper or two; a chain this deep is not ours
        if cause is None:
            return None
        inner = getattr(cause, "cause", None)
        if isinstance(inner, NeedleError):
            return inner
        if isinstance(cause, NeedleError) and not type(cause).__module__.startswith("ray"):
            return cause
        cause = inner if isinstance(inner, BaseException) else cause.__cause__
    return None


def raise_cause(error: BaseException) -> None:
    """If ``error`` wraps a :class:`NeedleError` raised in a task or actor, raise
    that error itself (its message, not Ray's traceback)."""
    inner = needle_cause(error)
    if inner is not None:
        raise inner.with_traceback(None) from None
