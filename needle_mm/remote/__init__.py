"""Needle over HTTP: the optional server (``needle serve``, extra ``server``) and its
clients: :class:`~needle_mm.Client` (standard library only) and
:class:`~needle_mm.AsyncClient` (asyncio, extra ``async``: httpx).

Import them from ``needle_mm`` (``needle_mm.Client``, ``needle_mm.AsyncClient``),
or from ``needle_mm.remote.client`` and ``needle_mm.remote.async_client``.
"""
