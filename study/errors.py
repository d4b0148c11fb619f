"""The two kinds of expected failure, which :mod:`study.cli` turns into one line and an exit status.

Every module raises a subclass of these (``ParamsError``, ``StorageError``, ``ExportError``, ...), so
the command-line wrapper in the core needs to know no wing: exit 2 for :class:`InputError`, exit 1 for
:class:`RunFailed`.
"""

from __future__ import annotations


class InputError(ValueError):
    """The input is wrong (params, data paths, database URLs, files) and nothing ran: exit status 2."""


class RunFailed(RuntimeError):
    """The work started and failed (a verification, a worker process that died): exit status 1."""
