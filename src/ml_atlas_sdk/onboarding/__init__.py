"""`atlas-bundle init`: conf files for a new model, inferred from its forward and its data."""
from ml_atlas_sdk.onboarding.command import InitRequest, init_model

__all__ = ["InitRequest", "init_model"]
