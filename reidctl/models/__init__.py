"""Model zoo. ``registry`` holds the specs (no torch); ``create_model`` builds and loads."""

from reidctl.models.registry import ModelSpec, get_spec, list_models, register_model

__all__ = ["ModelSpec", "get_spec", "list_models", "register_model"]
