"""A model module whose top-level code raises something other than ImportError."""
import os

if not os.environ.get("RANKER_FEATURE_STORE"):
    raise RuntimeError("RANKER_FEATURE_STORE is not set")


def build_model():
    raise AssertionError("never reached")
