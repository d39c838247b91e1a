"""Ways to choose an answer's tokens other than one most likely token at a time.

:mod:`gptf.generate` decodes greedily or by sampling; the searches here look further ahead and are
called from it when the recipe asks (``generation.beams``: :mod:`gptf.decoding.beam_search`).
"""
