"""Needle over HTTP: the optional server (``needle serve``, extra ``server``) and its client."""
