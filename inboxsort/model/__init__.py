"""Models as files and as the thing being served: artifacts, the registry, the live model."""
