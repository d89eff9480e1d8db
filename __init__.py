"""ComfyUI entry point of the palette-control pack: registers the nodes, the web widget and the models folder.

It also copies the example workflows' photos into ComfyUI's input folder (never overwriting a file there),
so the templates that need no model run on a fresh install.

ComfyUI imports this package under a mangled module name, so everything below uses relative imports.
Imported anywhere else (pytest collects the checkout as a package), it registers nothing.
"""

from __future__ import annotations

import importlib.util
import os

WEB_DIRECTORY = "./web"
MODELS_FOLDER = "palette_adapter"
IN_COMFYUI = importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy_api") is not None


def _register_models_folder() -> None:
    """Add ``models/palette_adapter`` while keeping paths that extra_model_paths.yaml already added."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, MODELS_FOLDER)
    paths = folder_paths.folder_names_and_paths.get(MODELS_FOLDER, ([], set()))[0]
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[MODELS_FOLDER] = (paths, folder_paths.supported_pt_extensions)


if IN_COMFYUI:
    import folder_paths
    from comfy_api.latest import ComfyExtension

    from .nodes import (
        adapter_nodes,
        adherence_nodes,
        interchange_nodes,
        negative_nodes,
        palette_edit_nodes,
        palette_nodes,
        quantize_nodes,
        recolor_nodes,
        training_free_nodes,
    )
    from .nodes import routes as _routes  # noqa: F401  (registers the palette widget's POST /palette_control/parse)
    from .nodes.example_inputs import copy_example_inputs

    NODE_LIST = [
        *palette_nodes.NODES,
        *palette_edit_nodes.NODES,
        *adapter_nodes.NODES,
        *recolor_nodes.NODES,
        *quantize_nodes.NODES,
        *interchange_nodes.NODES,
        *adherence_nodes.NODES,
        *negative_nodes.NODES,
        *training_free_nodes.NODES,
    ]
    _register_models_folder()
    copy_example_inputs(folder_paths.get_input_directory())

    class PaletteExtension(ComfyExtension):
        """The pack's V3 extension: hands ComfyUI its node classes."""

        async def get_node_list(self) -> list[type]:
            return list(NODE_LIST)

    async def comfy_entrypoint() -> PaletteExtension:
        """Called by ComfyUI when it loads the pack."""
        return PaletteExtension()
