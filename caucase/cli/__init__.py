"""One module per console script: parse arguments, call the library, print, exit."""
