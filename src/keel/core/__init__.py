"""Pure core: run states, journal events, command identity, replay, retry math, codec.

Nothing in here performs I/O, reads a clock or touches a database.
"""
