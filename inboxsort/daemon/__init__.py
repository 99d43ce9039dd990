"""The daemon: watch the inbox, settle, decode, batch, classify, file, record; hot-swap models.

The entry point is :func:`inboxsort.daemon.service.run`. This file imports nothing, so that
leaf modules (``filing``, ``moves``) can be used by ``inboxsort.labels`` and the CLI without
pulling in the whole service and creating an import cycle.
"""
