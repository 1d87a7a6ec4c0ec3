"""HTTP pieces the api and the worker's endpoint share: size-limited JSON bodies
(``body``), the one error body and its handlers (``errors``), and the uvicorn server that
drains on a signal (``server``). Above the contract, below both processes."""
