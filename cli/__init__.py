"""The top floor: the ``traffic`` command line (``cli.main``) and its own commands ``run`` and ``setup``.

It is the only package allowed to import every other one; nothing imports it.
"""
