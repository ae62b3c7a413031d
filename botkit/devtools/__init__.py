"""Developer tools: the dev server and chat page, the terminal chat, flow diagrams,
and the provider emulator.

- :mod:`botkit.devtools._server`: ``botkit dev``, the service on the emulator and
  a memory store;
- :mod:`botkit.devtools._page`: the chat page ``botkit dev`` serves at ``/_dev``;
- :mod:`botkit.devtools._chat`: ``botkit chat``, the same conversation in a terminal;
- :mod:`botkit.devtools._graph`: ``botkit graph``, each flow drawn from its definition;
- :mod:`botkit.devtools._commands`: the dev commands' arguments (added to ``botkit``);
- :mod:`botkit.devtools.emulator`: a local stand-in for the Devino provider
  (``python -m botkit.devtools.emulator`` or ``botkit emulator``).

Nothing here is needed to run a bot in production.
"""

from botkit.devtools._graph import mermaid
from botkit.devtools._server import DevServer, create_dev_app

__all__ = ["DevServer", "create_dev_app", "mermaid"]
