"""What crosses a process boundary, and nothing else: the call hand-off api → worker
(``calls``), why a call could not be placed and how that reads as HTTP (``errors``), the
worker ↔ agent pipe messages (``pipe``) and the page's messages (``page``).

Import-light on purpose: the api, the worker and the agent all import it, so nothing here
pulls Pipecat, an SDK or a web framework.
"""
