"""Adapters that make a Needle collection a vector store of an LLM framework.

Each lives in its own module and imports its framework only there, so
``import needle_mm`` never pulls a framework in:

- :mod:`needle_mm.integrations.langchain` (extra ``[langchain]``)
- :mod:`needle_mm.integrations.llama_index` (extra ``[llama-index]``)
"""
