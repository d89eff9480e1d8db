"""ComfyUI glue of the pack: V3 node classes, one file per concern, each a thin call into palette_core.

This package's ``__init__`` imports nothing, so host-independent helpers in it (patch objects) can be
imported and contract-tested without ComfyUI; the root ``__init__`` lists the node modules.
"""
