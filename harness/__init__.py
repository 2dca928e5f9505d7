"""rarebench engine: models -> data -> ablation -> analyses -> stats -> report."""

__version__ = "0.1.0"
