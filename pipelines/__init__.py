"""DVC stage entry points: ``python -m pipelines.<stage>``; see ``dvc.yaml``."""
