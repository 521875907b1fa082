"""`authctl` internals: argument parsing, command dispatch, rendering, wiring.

`authd.authctl.main` is the entry point; the actions themselves live in `authd.admin`
so that the HTTP admin API runs exactly the same code.
"""
