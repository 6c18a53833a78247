"""One module per console script: parse arguments, call the library, print, exit.

``passphrase`` is caucased-manage's: where its passphrases come from.
"""
