"""Scale-out: distributed preprocessing and inference on Ray, gallery search with FAISS.

Both engines are optional extras (``pip install 'reidctl[ray]'``, ``'reidctl[faiss]'``) and
are imported only inside the functions that need them, so ``import reidctl.scale`` is cheap
and a missing package fails with :class:`reidctl.errors.BackendUnavailableError` and the
install hint.
"""
