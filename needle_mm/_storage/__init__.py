"""The only package that touches the file system with mutating calls.

``io.FileIO`` is the one place that calls pwrite/fsync/fallocate/rename, and
every such call passes a named failpoint (``failpoints``), so crash tests can
stop the process at each step of the commit protocol. ``lock`` wraps
``filelock``; ``mapping`` reads the header and superblocks and maps committed
bytes read-only.
"""
