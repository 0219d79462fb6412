"""The operations the CLI and the dashboard share: who is acting, enqueueing an analysis, exports.

Both front ends call these functions, so an export or an upload cannot drift between them
(number formatting, audit rows, permission checks). Imports ``affectline`` and ``storage``
only: never torch or the worker code; work is enqueued by task name.
"""
