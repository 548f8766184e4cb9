"""Jobs that run on an inference worker's control queue (see models_admin.worker_control)."""

from __future__ import annotations

from models_admin.models import LocalModel
from models_admin.runtime import runtime


def control_load(model_id: int) -> str:
    """Job, on the worker: load the model now (a no-op if it holds it with these options)."""
    model = LocalModel.objects.get(pk=model_id)
    runtime.engine_for(model)
    return f"loaded {model.name}"


def control_unload(model_id: int) -> str:
    model = LocalModel.objects.get(pk=model_id)
    return f"unloaded {model.name}" if runtime.unload(model) else f"{model.name} was not loaded"
