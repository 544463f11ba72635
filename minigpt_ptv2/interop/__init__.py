"""PEFT adapter interop: our prompts <-> `adapter_config.json` + `adapter_model.safetensors`.

    peft_layout.py     what PEFT's files hold, and each of our methods in that form
    adapter_files.py   write an adapter folder; read one back, checked field by field
    export.py          one of our checkpoints -> an adapter folder
    import_adapter.py  an adapter folder -> one of our checkpoints

Written with json + safetensors only: the package never imports peft.
"""
from .adapter_files import Adapter, load_adapter, read_adapter_config, save_adapter
from .export import export_checkpoint
from .import_adapter import import_adapter
from .peft_layout import adapter_config, prompt_to_peft

__all__ = ["save_adapter", "load_adapter", "read_adapter_config", "Adapter", "export_checkpoint",
           "import_adapter", "adapter_config", "prompt_to_peft"]
