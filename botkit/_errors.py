"""The root of botkit's errors.

Every exception botkit raises on purpose derives from :class:`BotkitError`,
so ``except botkit.BotkitError`` catches them all; each also keeps the
built-in base it had (``DefinitionError`` is a ``TypeError``, ``SettingsError``
a ``ValueError``), so existing ``except`` clauses still work.
"""

from __future__ import annotations


class BotkitError(Exception):
    """Base class of every error botkit raises: the message says what to do."""
