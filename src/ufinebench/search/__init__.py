"""Searching a gallery by description: the index (embeddings, thumbnails, FAISS) and the query normaliser.

Used by the ``index`` / ``search`` commands and the web service (``ufinebench.serve``).
"""
