"""rarebench engine: models -> data -> ablation -> analyses -> stats -> report.

Python API (harness.api, imported on first use so `import harness` stays cheap):
run_claims, read_results, list_claims, load_model.
"""

__version__ = "0.1.0"

_API = ("run_claims", "read_results", "results_frame", "list_claims", "load_model")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
