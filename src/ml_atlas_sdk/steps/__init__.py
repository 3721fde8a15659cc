"""The build steps on in-memory objects: the one engine behind the DVC stages and the SDK."""
