"""The daemon: watch, settle, batch, classify, file."""
