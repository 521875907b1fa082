"""The decision layer: what one authentication attempt decides, as plain code.

A decision reads the user's record (`Store.get_user_tokens_codes`), runs the blocking
work it needs outside any store transaction (first factor, directory lookup, taking a
challenge State) and returns the writes it wants with the answer each outcome of those
writes stands for (`Planned`). It never commits anything itself: `Engine.decide`
commits one decision's writes alone; the batching layer (authd/batching) commits many
together. Both run this same code.
"""
