"""
Layer 6, the command line.

``mesh`` and its commands over the layers below. Private: use the ``mesh`` command or
``mesh.commands``.
"""
