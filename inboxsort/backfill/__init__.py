"""`inboxsort backfill`: classify an archive where it lies, with Ray Data, exactly once.

scan.py walks the folders and leaves out what is on record; pipeline.py is the Ray Data part
(decode tasks, a pool of model actors); writer.py records results in the driver as they
stream back; progress.py shows it; run.py wires them.
"""
