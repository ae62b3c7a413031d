"""Developer tools: the dev chat page, the terminal chat and flow diagrams.

- :mod:`botkit.devtools.page`: the chat page ``botkit dev`` serves at ``/_dev``;
- :mod:`botkit.devtools.chat`: ``botkit chat``, the same conversation in a terminal;
- :mod:`botkit.devtools.graph`: ``botkit graph``, each flow drawn from its definition;
- :mod:`botkit.devtools.commands`: the two commands' arguments (added to ``botkit``).

Nothing here is needed to run a bot in production.
"""
