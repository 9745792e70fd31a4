"""deltajobs: take a PyTorch experiment from a laptop to the GPUs of a SLURM cluster and back.

The names user code imports are loaded on first use, so `import deltajobs` stays cheap (no torch,
no typer): `report`, `should_stop` and `EXIT_REQUEUE` (deltajobs.injob.contract); `Executor`, `Job`,
`JobFailedError` and `submit_script` (deltajobs.jobs.executor).
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "report": "deltajobs.injob.contract",
    "should_stop": "deltajobs.injob.contract",
    "EXIT_REQUEUE": "deltajobs.injob.contract",
    "Executor": "deltajobs.jobs.executor",
    "Job": "deltajobs.jobs.executor",
    "JobFailedError": "deltajobs.jobs.executor",
    "submit_script": "deltajobs.jobs.executor",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deltajobs' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
